import { Command } from 'commander';
import { DEMO_CONFIG, runDemo } from '../../demo.js';

export function demoCommand(): Command {
  return new Command('demo')
    .description('show the gate at work in two throwaway network namespaces (root), then remove everything it created')
    .option('-c, --config <file>', 'the demo config (its interface must be kg-demo-g)', DEMO_CONFIG)
    .addHelpText('after', '\nExample:\n  sudo knockgate demo\n')
    .action(async (opts: { config: string }) => {
      process.exitCode = await runDemo({ config: opts.config });
    });
}
