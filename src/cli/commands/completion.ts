import { Argument, Command } from 'commander';
import { SHELLS, completionScript, type Shell } from '../completion.js';

/**
 * `completion bash|zsh`: prints a completion script generated from the program tree.
 * getProgram returns the program to describe (default: the root of the tree this command is in).
 */
export function completionCommand(getProgram?: () => Command): Command {
  const cmd = new Command('completion')
    .description('print a shell completion script (bash or zsh) for every command and option')
    .addArgument(new Argument('<shell>', 'the shell to complete for').choices(SHELLS))
    .addHelpText(
      'after',
      '\nExamples:\n' +
        '  knockgate completion bash > /etc/bash_completion.d/knockgate\n' +
        '  source <(knockgate completion bash)          # in ~/.bashrc\n' +
        '  knockgate completion zsh > "${fpath[1]}/_knockgate"\n',
    );
  return cmd.action((shell: Shell) => {
    let program: Command = cmd;
    if (getProgram !== undefined) program = getProgram();
    else while (program.parent !== null) program = program.parent;
    process.stdout.write(completionScript(shell, program));
  });
}
