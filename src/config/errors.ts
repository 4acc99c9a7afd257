// Config issues: every problem found in a file, with its position and key path.

export interface ConfigIssue {
  /** The file name as given to the loader ("<config>" for text without a file). */
  file: string;
  /** 1-based line and column of the offending node; 0 when the issue has no position. */
  line: number;
  col: number;
  /** Key path such as "doors.ssh.sequence[1]"; "" for the whole file (e.g. YAML syntax). */
  path: string;
  message: string;
}

/** "knockgate.yaml:12:7: doors.ssh.sequence[1]: message" */
export function formatIssue(issue: ConfigIssue): string {
  const where = issue.line > 0 ? `${issue.file}:${issue.line}:${issue.col}` : issue.file;
  return issue.path === '' ? `${where}: ${issue.message}` : `${where}: ${issue.path}: ${issue.message}`;
}

/** Thrown when a config has errors; carries all of them, in file order. */
export class ConfigError extends Error {
  override readonly name = 'ConfigError';
  readonly issues: readonly ConfigIssue[];
  /** Warnings found while validating, if it got that far. */
  readonly warnings: readonly ConfigIssue[];

  constructor(issues: readonly ConfigIssue[], warnings: readonly ConfigIssue[] = []) {
    super(issues.map(formatIssue).join('\n'));
    this.issues = issues;
    this.warnings = warnings;
  }

  /** One line per issue, as a compiler prints them. */
  format(): string {
    return this.issues.map(formatIssue).join('\n');
  }
}

/** Sorts issues by position (stable for issues at the same place). */
export function sortIssues(issues: ConfigIssue[]): ConfigIssue[] {
  return issues
    .map((issue, i) => ({ issue, i }))
    .sort((a, b) => a.issue.line - b.issue.line || a.issue.col - b.issue.col || a.i - b.i)
    .map((x) => x.issue);
}

/** Levenshtein distance, for did-you-mean suggestions. */
export function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const cur = [i];
    for (let j = 1; j <= b.length; j++) {
      const cost = a[i - 1] === b[j - 1] ? 0 : 1;
      cur.push(Math.min((prev[j] ?? 0) + 1, (cur[j - 1] ?? 0) + 1, (prev[j - 1] ?? 0) + cost));
    }
    prev = cur;
  }
  return prev[b.length] ?? 0;
}

/** The closest candidate within edit distance 2, or null. Case differences count as 1 each. */
export function suggest(word: string, candidates: readonly string[]): string | null {
  let best: string | null = null;
  let bestDistance = 3;
  for (const c of candidates) {
    const d = editDistance(word, c);
    if (d < bestDistance) {
      best = c;
      bestDistance = d;
    }
  }
  return best;
}
