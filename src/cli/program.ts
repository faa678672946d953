/** The `edgellm` command tree: one file per subcommand; errors are one clear line and a non-zero exit. */
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

const require = createRequire(import.meta.url);
const { version } = require('../../package.json') as { version: string };

export function buildProgram(): Command {
  const program = new Command();
  program
    .name('edgellm')
    .description('LLM inference runtime and MQTT daemon for Raspberry Pi-class devices')
    .version(version)
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();
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
  return program;
}

/** Runs the CLI on argv (without node and script) and returns the process exit code. */
export async function runCli(argv: string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync(argv, { from: 'user' });
    return 0;
  } catch (err) {
    if (err instanceof CommanderError) {
      // --help and --version end here with code 0; usage errors were already printed.
      return err.exitCode;
    }
    if (err instanceof EdgeError) {
      process.stderr.write(`edgellm: ${err.code}: ${err.message}\n`);
      return 2;
    }
    process.stderr.write(`edgellm: internal error: ${(err as Error).stack ?? String(err)}\n`);
    return 70;
  }
}
