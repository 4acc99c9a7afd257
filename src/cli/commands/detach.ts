/** `knockgate detach`: remove the gate from its interfaces and remove its pins. */
import { Command } from 'commander';
import { controlRequest } from '../../control.js';
import { withGateLock } from '../../kernel/lock.js';
import { openTarget, resolvePinPath, targetOptions, type TargetOptions } from '../target.js';

export function detachCommand(): Command {
  return targetOptions(new Command('detach'))
    .description('detach the gate from every interface and remove its pins (live grants are lost; a running daemon stops)')
    .addHelpText('after', '\nExample:\n  knockgate detach --pin-path /sys/fs/bpf/knockgate\n')
    .action(async (opts: TargetOptions) => {
      const pinPath = await resolvePinPath(opts);
      const gate = await openTarget({ pinPath });
      const links = gate.pinnedLinkNames();
      await withGateLock(pinPath, () => gate.destroy());
      const daemon = await controlRequest(pinPath, { op: 'detached' });
      process.stdout.write(`detached from ${links.join(', ') || 'no interface'}; pins under ${pinPath} removed${daemon ? '; the daemon stops' : ''}\n`);
    });
}
