import { Command } from 'commander';
import { DEMO_CONFIG, runDemo } from '../../demo.js';
import { runFleetDemo } from '../../demo-fleet.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description('show the gate at work in two throwaway network namespaces (root), then remove everything it created')
    .option('-c, --config <file>', 'the demo config (its interface must be kg-demo-g)', DEMO_CONFIG)
    .option('--fleet', 'fleet mode: two gates and an etcd member; a knock at host A opens host B')
    .addHelpText('after', '\nExample:\n  sudo knockgate demo\n  sudo knockgate demo --fleet\n')
    .action(async (opts: { config: string; fleet?: boolean }) => {
      process.exitCode = opts.fleet ? await runFleetDemo() : await runDemo({ config: opts.config });
    });
}
