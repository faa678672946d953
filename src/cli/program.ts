/**
 * The `edgellm` command tree: one file per subcommand. Every error, argument parsing included, is one
 * line `edgellm: E_CODE: message` on stderr and exit 2; Ctrl-C is exit 130 (see interrupt.ts).
 */
import { Command, CommanderError } from 'commander';
import { createRequire } from 'node:module';
import { EdgeError } from '../errors.js';
import { registerAudit } from './audit.js';
import { registerBench } from './bench.js';
import { registerDoctor } from './doctor.js';
import { registerEmbed } from './embed.js';
import { registerGenerate } from './generate.js';
import { registerGrant } from './grant.js';
import { registerInspect } from './inspect.js';
import { registerLogits } from './logits.js';
import { registerProfile } from './profile.js';
import { registerQuantize } from './quantize.js';
import { registerRequest } from './request.js';
import { registerServe } from './serve.js';
import { registerTokenize } from './tokenize.js';
import { registerTrace } from './trace.js';
import { unknownEnvironmentWarnings } from '../config.js';
import { EXIT_INTERRUPTED, handleSigint, Interrupted } from './interrupt.js';

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('edgellm')
    .description('LLM inference runtime and MQTT daemon for Raspberry Pi-class devices')
    .version(version)
    // Commander's own error lines are replaced by runCli's one line (set before the subcommands, which inherit it).
    .configureOutput({ outputError: () => undefined });
  registerAudit(program);
  registerBench(program);
  registerDoctor(program);
  registerEmbed(program);
  registerGenerate(program);
  registerGrant(program);
  registerInspect(program);
  registerLogits(program);
  registerProfile(program);
  registerQuantize(program);
  registerRequest(program);
  registerServe(program);
  registerTokenize(program);
  registerTrace(program);
  for (const cmd of allCommands(program)) cmd.exitOverride((err) => {
    throw usageError(cmd, err);
  });
  return program;
}

function allCommands(cmd: Command): Command[] {
  return [cmd, ...cmd.commands.flatMap(allCommands)];
}

/** `edgellm generate` */
function commandLine(cmd: Command): string {
  const names: string[] = [];
  for (let c: Command | null = cmd; c; c = c.parent) names.unshift(c.name());
  return names.join(' ');
}

/** Commander's exits that are not errors: --help, --version, and help shown for a bare `edgellm`. */
const NOT_ERRORS = new Set(['commander.helpDisplayed', 'commander.version', 'commander.help']);

/**
 * A parsing error of commander (a required option missing, an unknown option, a missing argument, a
 * bad value) as the CLI's one line: E_BAD_ARGUMENT, what was wrong (with commander's own "did you
 * mean" when it has one) and the --help to read. Other exits (help, version) pass through.
 */
function usageError(cmd: Command, err: CommanderError): Error {
  if (NOT_ERRORS.has(err.code) || !err.code.startsWith('commander.')) return err;
  const what = err.message.replace(/^error: /, '').replace(/\s*\n\s*/g, ' ').trim();
  return new EdgeError('E_BAD_ARGUMENT', `${what}: see \`${commandLine(cmd)} --help\``);
}

/** Runs the CLI on argv (without node and script) and returns the process exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  for (const warning of unknownEnvironmentWarnings(process.env)) process.stderr.write(`edgellm: warning: ${warning}\n`);
  const uninstall = handleSigint();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof Interrupted) return EXIT_INTERRUPTED;
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0 (doctor's failed checks with 1).
      return err.exitCode;
    }
    if (err instanceof EdgeError) {
      process.stderr.write(`edgellm: ${err.code}: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`edgellm: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 70;
  } finally {
    uninstall();
  }
}
