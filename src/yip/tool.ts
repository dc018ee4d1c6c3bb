/** How the engine runs a system tool (git, sgdisk, mkfs...): an argv, given by the caller (only src/sys spawns). */
export type ToolExec = (
  argv: readonly string[],
  opts?: { okExitCodes?: readonly number[]; stdin?: string; env?: Readonly<Record<string, string>> },
) => Promise<{ exitCode: number; stdout: string }>;
