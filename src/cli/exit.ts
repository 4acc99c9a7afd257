/** Exit codes, documented in the README. */
export const EXIT = {
  OK: 0,
  FAILED: 1,
  USAGE: 2,
  /** the command needs a loaded gate and none is pinned */
  NO_GATE: 3,
  /** the config file is invalid */
  BAD_CONFIG: 4,
  /** a live daemon already serves this gate (run), or did not answer (detach) */
  DAEMON_RUNNING: 5,
} as const;

/** An error whose message is for the user, with the exit code it maps to. */
export class CliError extends Error {
  constructor(
    message: string,
    readonly exitCode: number = EXIT.FAILED,
  ) {
    super(message);
    this.name = 'CliError';
  }
}
