// The daemon as its own process, for tests that kill it: argv[2] is the config (JSON), argv[3] the fake
// model's delay per chunk in ms. Stops (drains) on SIGTERM like `edgellm serve`.
import { basename } from 'node:path';
import { configSchema } from '../../src/config.js';
import { Service } from '../../src/daemon/service.js';
import { FakeModel } from './fake-model.js';

const config = configSchema.parse(JSON.parse(process.argv[2] ?? '{}'));
const delayMs = Number(process.argv[3] ?? '0');
const service = new Service(config, async (path) => new FakeModel(basename(path).replace(/\.gguf$/, ''), delayMs));
process.once('SIGTERM', () => void service.stop().then(() => process.exit(0)));
// Memory tests (node --expose-gc): SIGUSR2 collects garbage and says how much heap is left in use.
process.on('SIGUSR2', () => {
  const gc = (globalThis as { gc?: () => void }).gc;
  gc?.();
  process.stderr.write(`gc: heap ${process.memoryUsage().heapUsed} bytes in use\n`);
});
await service.start();
