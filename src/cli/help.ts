/** What every command's --help ends with: a few concrete command lines a user can copy. */
import type { Command } from 'commander';

/**
 * Adds an "Examples:" block after the command's help: each entry is [command line, what it does].
 * The lines are shown as typed, with `$ ` in front; test/cli-help.test.ts checks every command has some.
 */
export function withExamples(cmd: Command, examples: ReadonlyArray<readonly [string, string]>): Command {
  const width = Math.max(...examples.map(([line]) => line.length));
  const lines = examples.map(([line, what]) => `  $ ${line.padEnd(width)}  # ${what}`);
  return cmd.addHelpText('after', `\nExamples:\n${lines.join('\n')}`);
}
