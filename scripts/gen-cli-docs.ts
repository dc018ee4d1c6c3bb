/**
 * `npm run gen-cli-docs`: writes cosctl's man page and bash/zsh completions (src/cli/docs.ts, from the command table)
 * to packaging/. test/cli/docs.test.ts fails when the committed files differ from what this writes.
 */
import { writeFile } from 'node:fs/promises';
import path from 'node:path';
import { cliDocs } from '../src/cli/docs.ts';
import { VERSION } from '../src/version.ts';

const repo = path.resolve(import.meta.dirname, '..');
for (const [file, text] of Object.entries(cliDocs(VERSION))) {
  await writeFile(path.join(repo, file), text);
  console.log(`wrote ${file}`);
}
