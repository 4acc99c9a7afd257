import { Command } from 'commander';
import { ConfigError, formatDuration, formatIssue, formatRange, loadConfigFile } from '../../config/index.js';
import { loadDoorSecrets } from '../../config/secrets.js';
import { kindOf } from '../../doors/index.js';
import { describeKnockRule } from '../../kernel/doors.js';
import { interfaceWarnings } from '../../interfaces.js';
import { listLinks } from '../../net/netlink.js';
import { EXIT } from '../exit.js';
import { DEFAULT_CONFIG } from '../paths.js';

export function checkCommand(): Command {
  return new Command('check')
    .description('validate a config file and print what it defines; exits non-zero on any error')
    .option('-c, --config <file>', 'config file', DEFAULT_CONFIG)
    .option('--json', 'print the result as JSON')
    .addHelpText('after', '\nExample:\n  knockgate check -c /etc/knockgate/knockgate.yaml\n')
    .action(async (opts: { config: string; json?: boolean }) => {
      try {
        const cfg = await loadConfigFile(opts.config);
        // Key files too: missing, malformed or readable by others is an error here, not at start.
        await loadDoorSecrets(cfg);
        // The host's interfaces (of this network namespace) against the config's.
        let hostWarnings: string[];
        try {
          hostWarnings = interfaceWarnings(cfg.interfaces, listLinks());
        } catch (err) {
          hostWarnings = [`cannot list this host's interfaces (${(err as Error).message}): interface names and tunnels were not checked`];
        }
        if (opts.json) {
          process.stdout.write(
            JSON.stringify({
              ok: true,
              file: cfg.file,
              warnings: [...cfg.warnings.map(formatIssue), ...hostWarnings],
              doors: cfg.doors.map((d) => d.name),
              interfaces: cfg.interfaces.map((i) => ({ name: i.name, xdp_mode: i.mode, pattern: i.pattern ?? false })),
            }) + '\n',
          );
        } else {
          for (const w of cfg.warnings) process.stderr.write(`warning: ${formatIssue(w)}\n`);
          for (const w of hostWarnings) process.stderr.write(`warning: ${w}\n`);
          process.stdout.write(`${opts.config}: OK\n`);
          process.stdout.write(
            cfg.interfaces.length > 0
              ? `  interfaces: ${cfg.interfaces.map((i) => `${i.name} (${i.mode}${i.pattern ? ', pattern' : ''})`).join(', ')}\n`
              : `  interfaces: none: inert, the gate guards nothing until \`interfaces\` lists some (e.g. [eth0])\n`,
          );
          for (const d of cfg.doors) {
            process.stdout.write(
              `  door ${d.name}: ${describeKnockRule(d)} -> ${d.protects.map(formatRange).join(' ')}` +
                ` (${kindOf(d).config.sequenced ? `step ${formatDuration(d.stepTimeoutMs)}, sequence ${formatDuration(d.sequenceTimeoutMs)}, ` : ''}open ${formatDuration(d.openForMs)}` +
                `${d.allowFrom ? `, from ${d.allowFrom.map((c) => c.text).join(' ')}` : ''})\n`,
            );
          }
        }
      } catch (err) {
        if (err instanceof ConfigError) {
          if (opts.json) {
            process.stdout.write(JSON.stringify({ ok: false, errors: err.issues, warnings: err.warnings }) + '\n');
          } else {
            process.stderr.write(err.format() + '\n');
            process.stderr.write(`${opts.config}: ${err.issues.length} error(s); nothing was changed\n`);
          }
          process.exitCode = EXIT.BAD_CONFIG;
          return;
        }
        throw err;
      }
    });
}
