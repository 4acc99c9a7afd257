import { Command } from 'commander';
import { runDaemon } from '../../daemon.js';
import { DEFAULT_CONFIG } from '../paths.js';

export function runCommand(): Command {
  return new Command('run')
    .description('load the gate, attach it to the configured interfaces and log kernel events until SIGTERM/SIGINT (SIGHUP reloads the config)')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .option('--keep', 'leave the gate enforcing after exit (a later run adopts it)')
    .option('--pretty', 'human-readable log lines instead of JSON')
    .addHelpText('after', '\nExample:\n  sudo knockgate run -c /etc/knockgate/knockgate.yaml --pretty\n')
    .action(async (opts: { config: string; keep?: boolean; pretty?: boolean }) => {
      const d = await runDaemon({ configPath: opts.config, keep: opts.keep ?? false, pretty: opts.pretty ?? false });
      await d.done;
    });
}
