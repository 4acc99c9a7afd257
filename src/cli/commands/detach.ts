/**
 * `knockgate detach`: remove the gate from its interfaces and remove its pins. When a daemon
 * serves the gate, the daemon is asked to do it (and stops); the gate is never pulled out
 * from under a running daemon. A daemon that does not answer is stopped first only with
 * --force.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { Command } from 'commander';
import { controlRequest, controlSocketPath } from '../../control.js';
import { MapLayoutError } from '../../bpf/index.js';
import { GateError, NoGateError, removePins, type Gate } from '../../kernel/gate.js';
import { daemonHolding, removeStaleDaemonLock, waitDaemonGone, withGateLock } from '../../kernel/lock.js';
import { CliError, EXIT } from '../exit.js';
import { cliLogger, openTarget, resolvePinPath, targetOptions, type TargetOptions } from '../target.js';

/** how long a daemon that agreed to detach may take to finish */
const DAEMON_DETACH_MS = 60_000;
const SIGTERM_GRACE_MS = 10_000;

export function detachCommand(): Command {
  return targetOptions(new Command('detach'))
    .description('detach the gate from every interface and remove its pins (live grants are lost); a running daemon is asked to do it and stops')
    .option('--force', 'when the running daemon does not answer, stop it (SIGTERM, then SIGKILL) and detach anyway')
    .addHelpText('after', '\nExample:\n  knockgate detach --pin-path /sys/fs/bpf/knockgate\n')
    .action(async (opts: TargetOptions & { force?: boolean }) => {
      const pinPath = await resolvePinPath(opts);
      let stopped = '';
      const pid = daemonHolding(pinPath);
      if (pid !== null) {
        const who = pid > 0 ? `the daemon (PID ${pid})` : 'the daemon';
        const answer = await controlRequest(pinPath, { op: 'detach' }, 5_000);
        if (answer?.['ok'] === true) {
          if (!(await waitDaemonGone(pinPath, DAEMON_DETACH_MS))) {
            throw new CliError(`${who} agreed to detach the gate at ${pinPath} but still runs after ${DAEMON_DETACH_MS / 1000}s: see its log (journalctl -u knockgate)`);
          }
          if (!existsSync(join(pinPath, 'maps'))) {
            process.stdout.write(`${who} detached the gate from its interfaces, removed its pins under ${pinPath} and stopped\n`);
            return;
          }
          stopped = `; ${who} stopped`;
        } else if (!opts.force) {
          throw new CliError(
            `${who} serves the gate at ${pinPath} but did not answer on its control socket ${controlSocketPath(pinPath)}: nothing was changed, ` +
              `the gate keeps enforcing. Check the daemon (\`journalctl -u knockgate\`, \`knockgate status\`), stop it (\`systemctl stop knockgate\`), ` +
              `or run \`knockgate detach --force\` to stop it (SIGTERM, then SIGKILL) and detach`,
            EXIT.DAEMON_RUNNING,
          );
        } else {
          await stopDaemon(pinPath, pid);
          stopped = `; ${who} did not answer and was stopped`;
        }
      }
      let gate: Gate | null = null;
      try {
        gate = await openTarget({ pinPath });
      } catch (err) {
        if (err instanceof NoGateError && stopped !== '') {
          process.stdout.write(`no gate is left at ${pinPath}${stopped}\n`);
          return;
        }
        // A gate of another knockgate version (other maps or sizes) cannot be opened by this
        // one, but its pins can be removed all the same: links first, which detaches it.
        if (!(err instanceof MapLayoutError) && !(err instanceof GateError && /another layout/.test(err.message))) throw err;
        await withGateLock(pinPath, () => removePins(pinPath, cliLogger));
        const daemon = await controlRequest(pinPath, { op: 'detached' });
        process.stdout.write(`the gate under ${pinPath} was loaded by another knockgate version: its pins were removed, which detaches it${daemon ? '; the daemon stops' : ''}${stopped}\n`);
        return;
      }
      const links = gate.pinnedLinkNames();
      const g = gate;
      await withGateLock(pinPath, () => g.destroy());
      process.stdout.write(`detached from ${links.join(', ') || 'no interface'}; pins under ${pinPath} removed${stopped}\n`);
    });
}

/** --force: end a daemon that does not answer, so that it cannot put the gate back. */
async function stopDaemon(pinPath: string, pid: number): Promise<void> {
  if (pid <= 0) throw new CliError(`a daemon holds the gate's lock at ${pinPath} but its PID is unknown: stop it yourself (systemctl stop knockgate), then detach`);
  const signal = (sig: NodeJS.Signals): void => {
    try {
      process.kill(pid, sig);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'ESRCH') throw err;
    }
  };
  signal('SIGTERM');
  if (await waitDaemonGone(pinPath, SIGTERM_GRACE_MS)) return;
  signal('SIGKILL');
  if (await waitDaemonGone(pinPath, SIGTERM_GRACE_MS)) {
    removeStaleDaemonLock(pinPath);
    return;
  }
  throw new CliError(`the daemon (PID ${pid}) did not stop after SIGTERM and SIGKILL: nothing was detached`);
}
