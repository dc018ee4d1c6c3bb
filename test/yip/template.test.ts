import test from 'ava';
import { renderTemplate } from '../../src/yip/template.ts';

const data = { Values: { os: { architecture: 'amd64', name: 'Debian GNU/Linux 12 (bookworm)' }, node: { hostname: 'cos-vm', machineid: 'abcdef0123456789' }, network: [{ name: 'eth0' }], cpu: { cpus: 2 } } };
const r = (s: string): string => renderTemplate(s, data).text;

test('text without actions is returned as is; field chains; a missing key prints <no value> (as yip does)', (t) => {
  t.is(r('echo plain $HOME ${X} $(date) awk \'{print $1}\''), 'echo plain $HOME ${X} $(date) awk \'{print $1}\'');
  t.is(r('echo {{.Values.os.architecture}}'), 'echo amd64');
  t.is(r('{{ .Values.node.hostname }}-{{.Values.cpu.cpus}}'), 'cos-vm-2');
  t.is(r("docker ps --format '{{.ID}}'"), "docker ps --format '<no value>'");
  t.is(r('{{.Values.nothing.deeper}}'), '<no value>');
});

test('pipelines, literals, builtins and the sprig functions of real cloud-configs', (t) => {
  t.is(r('kairos-{{ trunc 4 .Values.node.machineid }}'), 'kairos-abcd');
  t.is(r('{{ .Values.os.architecture | upper }}'), 'AMD64');
  t.is(r('{{ .Values.missing | default "x86" }}'), 'x86');
  t.is(r('{{ "a-b-c" | replace "-" "_" }}'), 'a_b_c');
  t.is(r('{{ printf "%s/%d" .Values.os.architecture .Values.cpu.cpus }}'), 'amd64/2');
  t.is(r('{{ len .Values.network }} {{ index .Values.network 0 "name" }}'), '1 eth0');
  t.is(r('{{ quote .Values.node.hostname }} {{ `raw\\n` }}'), '"cos-vm" raw\\n');
  t.is(r('{{ eq .Values.os.architecture "amd64" }} {{ not true }} {{ and 1 0 }} {{ or 0 "y" }}'), 'true false 0 y');
  t.is(r('{{ (print "a" "b") | upper }}'), 'AB');
});

test('if / else if / else / with, trim markers and comments', (t) => {
  t.is(r('{{ if eq .Values.os.architecture "arm64" }}arm{{ else if eq .Values.os.architecture "amd64" }}x86{{ else }}other{{ end }}'), 'x86');
  t.is(r('{{ if .Values.missing }}yes{{ else }}no{{ end }}'), 'no');
  t.is(r('{{ with .Values.node }}{{ .hostname }}{{ end }}|{{ with .Values.gone }}x{{ else }}none{{ end }}'), 'cos-vm|none');
  t.is(r('a  {{- " b " -}}  c{{/* note */}}'), 'a b c');
});

test('a template that does not parse or fails keeps the original text and says why', (t) => {
  for (const bad of ['{{ foo', '{{ nosuchfn 1 }}', '{{ if 1 }}x', '{{ end }}', '{{ .Values.os.name.first }}', '{{ range .Values.network }}x{{ end }}', '{{ "unterminated }}']) {
    const res = renderTemplate(bad, data);
    t.is(res.text, bad, bad);
    t.truthy(res.error, bad);
  }
});

test('names of Object.prototype are no functions', (t) => {
  for (const bad of ['{{ constructor }}', '{{ hasOwnProperty "x" }}', '{{ __proto__ }}']) t.truthy(renderTemplate(bad, data).error, bad);
});
