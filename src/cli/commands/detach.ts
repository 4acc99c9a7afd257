/** `knockgate detach`: remove the gate from its interfaces and remove its pins. */
import { Command } from 'commander';
import { controlRequest } from '../../control.js';
import { MapLayoutError } from '../../bpf/index.js';
import { GateError, removePins, type Gate } from '../../kernel/gate.js';
import { withGateLock } from '../../kernel/lock.js';
import { cliLogger, openTarget, resolvePinPath, targetOptions, type TargetOptions } from '../target.js';

export function detachCommand(): Command {
  return targetOptions(new Command('detach'))
    .description('detach the gate from every interface and remove its pins (live grants are lost; a running daemon stops)')
    .addHelpText('after', '\nExample:\n  knockgate detach --pin-path /sys/fs/bpf/knockgate\n')
    .action(async (opts: TargetOptions) => {
      const pinPath = await resolvePinPath(opts);
      let gate: Gate | null = null;
      try {
        gate = await openTarget({ pinPath });
      } catch (err) {
        // A gate of another knockgate version (other maps or sizes) cannot be opened by this
        // one, but its pins can be removed all the same: links first, which detaches it.
        if (!(err instanceof MapLayoutError) && !(err instanceof GateError && /another layout/.test(err.message))) throw err;
        await withGateLock(pinPath, () => removePins(pinPath, cliLogger));
        const daemon = await controlRequest(pinPath, { op: 'detached' });
        process.stdout.write(`the gate under ${pinPath} was loaded by another knockgate version: its pins were removed, which detaches it${daemon ? '; the daemon stops' : ''}\n`);
        return;
      }
      const links = gate.pinnedLinkNames();
      const g = gate;
      await withGateLock(pinPath, () => g.destroy());
      const daemon = await controlRequest(pinPath, { op: 'detached' });
      process.stdout.write(`detached from ${links.join(', ') || 'no interface'}; pins under ${pinPath} removed${daemon ? '; the daemon stops' : ''}\n`);
    });
}
