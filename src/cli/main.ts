#!/usr/bin/env node
import { runCli } from './program.js';

// `edgellm audit --json | head`: a reader that goes away ends the output quietly, as for other Unix tools.
process.stdout.on('error', (err: NodeJS.ErrnoException) => {
  if (err.code === 'EPIPE') process.exit(0);
  throw err;
});

process.exitCode = await runCli(process.argv.slice(2));
