/**
 * The config the Debian package installs as /etc/knockgate/knockgate.yaml: the commented example
 * (config/knockgate.example.yaml) with its `interfaces` list replaced by `[]`, so that the
 * service, which the package enables and starts, loads the gate attached to nothing until the
 * admin lists interfaces (`knockgate check` says "inert"). Everything else is the example,
 * comments included, so that the file documents every key in place.
 *
 * `node dist/src/doc/conffile.js config/knockgate.example.yaml` prints it.
 */
import { readFileSync, realpathSync } from 'node:fs';
import { pathToFileURL } from 'node:url';

const HEADER = `# /etc/knockgate/knockgate.yaml, as installed by the knockgate package: INERT until edited.
# \`interfaces\` below is empty, so the gate is loaded but attached to no interface and guards
# nothing. To put it to work:
#   1. list the interfaces to guard under \`interfaces\`;
#   2. write your own doors: the example doors below are samples (the ssh door protects 22/tcp
#      and lets only 198.18.0.0/15 and 2001:db8::/32 knock: kept as is, it locks you out);
#   3. knockgate check && systemctl reload knockgate   (or restart it after a pin_path/limits change)
# Reference: knockgate.yaml(5), knockgate(8). Removing the package detaches the gate;
# purging it removes this file.
# Durations take a unit: 500ms, 5s, 2m, 1h, 1h30m (at most 24h). Ports are 1..65535.
#
`;

const INERT = `# As installed, no interface: the gate guards nothing. For example:
#   interfaces:
#     - eth0
#     - name: eth1
#       xdp_mode: generic
interfaces: []
`;

/** The example with its interfaces block (the key and its indented or list lines) made empty. */
export function inertConfig(example: string): string {
  const lines = example.split('\n');
  const start = lines.findIndex((l) => /^interfaces:/.test(l));
  if (start < 0) throw new Error('the example has no top-level interfaces: key');
  let end = start + 1;
  while (end < lines.length && /^(\s+\S|-\s)/.test(lines[end]!)) end++;
  // The example's own first comment lines describe the example file: the header replaces them.
  let body = 0;
  while (body < lines.length && lines[body]!.startsWith('#')) body++;
  const out = [...lines.slice(body, start), ...INERT.trimEnd().split('\n'), ...lines.slice(end)];
  return HEADER + out.join('\n').replace(/^\n+/, '');
}

const entry = process.argv[1];
if (entry !== undefined && pathToFileURL(realpathSync(entry)).href === import.meta.url) {
  const file = process.argv[2];
  if (!file) {
    process.stderr.write('usage: node dist/src/doc/conffile.js config/knockgate.example.yaml\n');
    process.exit(2);
  }
  process.stdout.write(inertConfig(readFileSync(file, 'utf8')));
}
