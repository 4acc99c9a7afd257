import { Command, InvalidArgumentError } from 'commander';
import { runDaemon } from '../../daemon.js';
import { parseListenAddress, type ListenAddress } from '../../metrics.js';
import { DEFAULT_CONFIG } from '../paths.js';

export function runCommand(): Command {
  return new Command('run')
    .description('load the gate, attach it to the configured interfaces and log kernel events until SIGTERM/SIGINT (SIGHUP reloads the config)')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .option('--keep', 'leave the gate enforcing after exit (a later run adopts it)')
    .option('--pretty', 'human-readable log lines instead of JSON')
    .option('--metrics <host:port>', 'serve Prometheus metrics at http://HOST:PORT/metrics (off by default)', (v: string) => {
      try {
        return parseListenAddress(v);
      } catch (err) {
        throw new InvalidArgumentError((err as Error).message);
      }
    })
    .addHelpText('after', '\nExample:\n  sudo knockgate run -c /etc/knockgate/knockgate.yaml --pretty\n  sudo knockgate run -c /etc/knockgate/knockgate.yaml --keep --metrics 127.0.0.1:9477\n')
    .action(async (opts: { config: string; keep?: boolean; pretty?: boolean; metrics?: ListenAddress }) => {
      const d = await runDaemon({
        configPath: opts.config,
        keep: opts.keep ?? false,
        pretty: opts.pretty ?? false,
        ...(opts.metrics ? { metrics: opts.metrics } : {}),
      });
      await d.done;
    });
}
