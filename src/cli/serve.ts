/** `edgellm serve`: the MQTT daemon. Runs until SIGTERM or SIGINT, then drains and exits 0. */
import type { Command } from 'commander';
import { stringify } from 'yaml';
import { EdgeError } from '../errors.js';
import { basename } from 'node:path';
import { loadConfig, maskSecrets, modelFiles, type ConfigFlags, type DaemonConfig } from '../config.js';
import { ensureDemoModel } from '../daemon/demo-model.js';
import { localModelOpener } from '../daemon/local-model.js';
import { Service } from '../daemon/service.js';
import { SystemdNotifier } from '../daemon/systemd.js';
import { withExamples } from './help.js';
import { collectLora, LORA_FLAG, type LoraFlag } from './lora.js';
import { interruptSignal } from './interrupt.js';

interface ServeFlags extends ConfigFlags {
  config?: string;
  printConfig?: boolean;
  demo?: boolean;
  lora?: LoraFlag[];
}

/**
 * `serve --lora PATH[:SCALE]`: adapters of the default model (the first configured), each named by
 * its file name without .gguf, after those of the config's adapters.MODEL.
 */
function addLoraFlags(config: DaemonConfig, flags: readonly LoraFlag[]): void {
  const model = modelFiles(config).keys().next().value;
  if (model === undefined) throw new EdgeError('E_BAD_ARGUMENT', '--lora needs a model to adapt: give --model FILE (or model: in the config)');
  const list = (config.adapters[model] ??= []);
  for (const f of flags) {
    const name = basename(f.path).replace(/\.gguf$/i, '');
    if (/[/+#]/.test(name)) throw new EdgeError('E_BAD_ARGUMENT', `--lora ${f.path}: requests name an adapter by its file name, and "${name}" has a "/", "+" or "#"; rename the file`);
    if (list.some((a) => a.name === name)) throw new EdgeError('E_BAD_ARGUMENT', `--lora ${f.path}: model "${model}" already has an adapter named "${name}" (each --lora is named by its file name)`);
    list.push({ name, path: f.path, scale: f.scale });
  }
}

export function registerServe(program: Command): void {
  const cmd = program
    .command('serve')
    .description('answer requests from MQTT with the local model (the daemon)')
    .option('-c, --config <file>', 'YAML or JSON config file (EDGELLM_* variables and these flags override it)')
    .option('--broker <url>', 'MQTT broker URL (broker.url)')
    .option('-m, --model <file>', 'GGUF model file to serve (model)')
    .option('--fleet-group <group>', 'share requests with the other nodes of this group (fleet.group)')
    .option('--state-dir <dir>', 'directory of the SQLite database (state_dir)')
    .option('--node-id <id>', "this node's name in topics and replies (node_id)")
    .option('--http-port <port>', 'serve GET /healthz and GET /metrics on this port of http.host, 127.0.0.1 by default (http.port; 0 = off)')
    .option('--openai-port <port>', 'also serve the OpenAI-compatible HTTP API on this port (openai.port)')
    .option('--prefix <prefix>', 'first topic level of every topic (prefix; default edgellm)')
    .option('--embedded-broker-port <port>', 'port of the broker serve runs itself when no broker is configured (broker.embedded.port; default 1883)')
    .option('--log-level <level>', 'error, warn, info or debug (log.level; default info)')
    .option('--log-format <format>', 'auto (readable on a terminal, JSON lines otherwise), json or pretty (log.format)')
    .option(LORA_FLAG, 'a LoRA adapter of the model, named by its file name for requests (adapter: NAME), with its scale, default 1 (repeat for more)', collectLora)
    .option('--demo', 'with no model configured, serve a small random-weight demo model (written to state_dir/models): nonsense text, working plumbing')
    .option('--print-config', 'print the effective config (secrets masked) and exit')
    .action(async (flags: ServeFlags) => {
      const { lora, ...configFlags } = flags;
      const config = loadConfig({ ...(flags.config ? { file: flags.config } : {}), flags: configFlags });
      if (lora) addLoraFlags(config, lora);
      if (flags.printConfig) {
        process.stdout.write(stringify(maskSecrets(config)));
        return;
      }
      let demoNote: string | undefined;
      if (modelFiles(config).size === 0) {
        if (!flags.demo) {
          throw new EdgeError('E_CONFIG', 'no model to serve: set model in the config file, EDGELLM_MODEL, or --model FILE (or --demo for a small demo model that proves the setup works)');
        }
        const demo = ensureDemoModel(config.state_dir);
        config.model = demo.path;
        demoNote =
          `no model configured: serving the demo model ${demo.path}${demo.created ? ' (written just now)' : ''}. ` +
          'Its weights are random, so its answers are nonsense words; it shows the daemon works. ' +
          'Serve a real GGUF with --model FILE (or model: in a config file).';
      }
      const systemd = new SystemdNotifier();
      const service = new Service(config, localModelOpener(config), undefined, systemd);
      if (demoNote) service.log.warn(demoNote);
      // Ctrl-C drains like SIGTERM (a clean stop, exit 0), through the CLI's interrupt handling.
      const interrupted = interruptSignal();
      const stopped = new Promise<void>((resolve) => {
        process.once('SIGTERM', resolve);
        interrupted.addEventListener('abort', () => resolve(), { once: true });
      });
      // A signal during start (say, while the broker is still unreachable) stops it too.
      const first = await Promise.race([service.start().then(() => 'started' as const), stopped.then(() => 'signal' as const)]).catch(
        async (err: unknown) => {
          // What `systemctl status edgellm` shows. The exit status is 2 for an EdgeError (a missing
          // model, a taken port, a bad config): the unit's RestartPreventExitStatus=2 keeps systemd
          // from restarting into the same refusal every RestartSec.
          // Sent after the stop's own STOPPING status, so it is the last one systemd shows.
          await service.stop();
          const why = err instanceof EdgeError ? `${err.code}: ${err.message}` : String(err);
          systemd.notifyStatus(`failed to start: ${why}`);
          throw err;
        },
      );
      if (first === 'started') await stopped;
      await service.stop();
    });
  withExamples(cmd, [
    ['edgellm serve --demo --state-dir .edgellm', 'try it: a demo model and the embedded broker'],
    ['edgellm serve -m base.gguf --lora tone.gguf:0.5 --openai-port 8080', 'also the OpenAI API; a LoRA adapter asked as adapter "tone" or model "base+tone"'],
    ['edgellm serve -c /etc/edgellm/config.yaml --log-level debug', 'as the service runs it, with debug logs'],
  ]);
}
