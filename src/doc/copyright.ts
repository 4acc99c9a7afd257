/**
 * debian/copyright (machine-readable format 1.0) for the package: knockgate's own stanza
 * (packaging/debian/copyright), then one stanza per bundled Node module with the license its
 * package.json declares and its author, then the text of every license named.
 *
 * `node dist/src/doc/copyright.js packaging/debian/copyright STAGED_NODE_MODULES` prints it.
 */
import { existsSync, readdirSync, readFileSync, realpathSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

interface Module {
  name: string;
  license: string;
  author: string;
}

function authorOf(pkg: Record<string, unknown>): string {
  const a = pkg['author'];
  if (typeof a === 'string' && a.trim()) return a.trim();
  if (a && typeof a === 'object' && typeof (a as { name?: unknown }).name === 'string') return (a as { name: string }).name;
  return `the ${String(pkg['name'])} authors`;
}

/** Every package under node_modules (scoped ones included), sorted by name. */
export function bundledModules(nodeModules: string): Module[] {
  const out: Module[] = [];
  const visit = (dir: string, prefix: string): void => {
    for (const name of readdirSync(dir).sort()) {
      if (name.startsWith('.')) continue;
      const path = join(dir, name);
      if (name.startsWith('@') && prefix === '') {
        visit(path, `${name}/`);
        continue;
      }
      const file = join(path, 'package.json');
      if (!existsSync(file)) continue;
      const pkg = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
      const license = typeof pkg['license'] === 'string' ? pkg['license'] : '';
      if (!license) throw new Error(`${prefix}${name}: package.json names no license: check it by hand before shipping it`);
      out.push({ name: `${prefix}${name}`, license, author: authorOf(pkg) });
      if (existsSync(join(path, 'node_modules'))) visit(join(path, 'node_modules'), '');
    }
  };
  visit(nodeModules, '');
  return out;
}

const TEXTS: Record<string, string> = {
  'GPL-2.0-only': `This program is free software; you can redistribute it and/or modify it under
the terms of the GNU General Public License, version 2, as published by the Free
Software Foundation.
.
This program is distributed in the hope that it will be useful, but WITHOUT ANY
WARRANTY; without even the implied warranty of MERCHANTABILITY or FITNESS FOR A
PARTICULAR PURPOSE. See the GNU General Public License for more details.
.
On Debian systems, the complete text of the GNU General Public License version 2
can be found in "/usr/share/common-licenses/GPL-2".`,
  'Apache-2.0': `Licensed under the Apache License, Version 2.0 (the "License"); you may not use
this file except in compliance with the License.
.
Unless required by applicable law or agreed to in writing, software distributed
under the License is distributed on an "AS IS" BASIS, WITHOUT WARRANTIES OR
CONDITIONS OF ANY KIND, either express or implied. See the License for the
specific language governing permissions and limitations under the License.
.
On Debian systems, the complete text of the Apache License, Version 2.0 can be
found in "/usr/share/common-licenses/Apache-2.0".`,
  MIT: `Permission is hereby granted, free of charge, to any person obtaining a copy of
this software and associated documentation files (the "Software"), to deal in
the Software without restriction, including without limitation the rights to
use, copy, modify, merge, publish, distribute, sublicense, and/or sell copies of
the Software, and to permit persons to whom the Software is furnished to do so,
subject to the following conditions:
.
The above copyright notice and this permission notice shall be included in all
copies or substantial portions of the Software.
.
THE SOFTWARE IS PROVIDED "AS IS", WITHOUT WARRANTY OF ANY KIND, EXPRESS OR
IMPLIED, INCLUDING BUT NOT LIMITED TO THE WARRANTIES OF MERCHANTABILITY, FITNESS
FOR A PARTICULAR PURPOSE AND NONINFRINGEMENT. IN NO EVENT SHALL THE AUTHORS OR
COPYRIGHT HOLDERS BE LIABLE FOR ANY CLAIM, DAMAGES OR OTHER LIABILITY, WHETHER
IN AN ACTION OF CONTRACT, TORT OR OTHERWISE, ARISING FROM, OUT OF OR IN
CONNECTION WITH THE SOFTWARE OR THE USE OR OTHER DEALINGS IN THE SOFTWARE.`,
  ISC: `Permission to use, copy, modify, and/or distribute this software for any purpose
with or without fee is hereby granted, provided that the above copyright notice
and this permission notice appear in all copies.
.
THE SOFTWARE IS PROVIDED "AS IS" AND THE AUTHOR DISCLAIMS ALL WARRANTIES WITH
REGARD TO THIS SOFTWARE INCLUDING ALL IMPLIED WARRANTIES OF MERCHANTABILITY AND
FITNESS. IN NO EVENT SHALL THE AUTHOR BE LIABLE FOR ANY SPECIAL, DIRECT,
INDIRECT, OR CONSEQUENTIAL DAMAGES OR ANY DAMAGES WHATSOEVER RESULTING FROM LOSS
OF USE, DATA OR PROFITS, WHETHER IN AN ACTION OF CONTRACT, NEGLIGENCE OR OTHER
TORTIOUS ACTION, ARISING OUT OF OR IN CONNECTION WITH THE USE OR PERFORMANCE OF
THIS SOFTWARE.`,
  'BSD-3-Clause': `Redistribution and use in source and binary forms, with or without modification,
are permitted provided that the following conditions are met:
.
1. Redistributions of source code must retain the above copyright notice, this
list of conditions and the following disclaimer.
2. Redistributions in binary form must reproduce the above copyright notice,
this list of conditions and the following disclaimer in the documentation
and/or other materials provided with the distribution.
3. Neither the name of the copyright holder nor the names of its contributors
may be used to endorse or promote products derived from this software without
specific prior written permission.
.
THIS SOFTWARE IS PROVIDED BY THE COPYRIGHT HOLDERS AND CONTRIBUTORS "AS IS" AND
ANY EXPRESS OR IMPLIED WARRANTIES, INCLUDING, BUT NOT LIMITED TO, THE IMPLIED
WARRANTIES OF MERCHANTABILITY AND FITNESS FOR A PARTICULAR PURPOSE ARE
DISCLAIMED. IN NO EVENT SHALL THE COPYRIGHT HOLDER OR CONTRIBUTORS BE LIABLE FOR
ANY DIRECT, INDIRECT, INCIDENTAL, SPECIAL, EXEMPLARY, OR CONSEQUENTIAL DAMAGES
(INCLUDING, BUT NOT LIMITED TO, PROCUREMENT OF SUBSTITUTE GOODS OR SERVICES; LOSS
OF USE, DATA, OR PROFITS; OR BUSINESS INTERRUPTION) HOWEVER CAUSED AND ON ANY
THEORY OF LIABILITY, WHETHER IN CONTRACT, STRICT LIABILITY, OR TORT (INCLUDING
NEGLIGENCE OR OTHERWISE) ARISING IN ANY WAY OUT OF THE USE OF THIS SOFTWARE,
EVEN IF ADVISED OF THE POSSIBILITY OF SUCH DAMAGE.`,
};

/** The whole copyright file; throws on a license this file has no text for. */
export function copyrightFile(head: string, modules: readonly Module[]): string {
  const licenses = new Set<string>(['GPL-2.0-only']);
  const stanzas: string[] = [head.trimEnd()];
  for (const m of modules) {
    if (!TEXTS[m.license]) throw new Error(`${m.name} is under ${m.license}, which packaging/debian/copyright has no text for: add it to src/doc/copyright.ts after checking it`);
    licenses.add(m.license);
    stanzas.push(`Files: usr/lib/knockgate/node_modules/${m.name}/*\nCopyright: ${m.author}\nLicense: ${m.license}`);
  }
  for (const l of [...licenses].sort()) stanzas.push(`License: ${l}\n${TEXTS[l]!.split('\n').map((x) => ` ${x}`).join('\n')}`);
  return stanzas.join('\n\n') + '\n';
}

const entry = process.argv[1];
if (entry !== undefined && pathToFileURL(realpathSync(entry)).href === import.meta.url) {
  const [head, nodeModules] = process.argv.slice(2);
  if (!head || !nodeModules) {
    process.stderr.write('usage: node dist/src/doc/copyright.js packaging/debian/copyright NODE_MODULES\n');
    process.exit(2);
  }
  try {
    process.stdout.write(copyrightFile(readFileSync(head, 'utf8'), bundledModules(nodeModules)));
  } catch (err) {
    process.stderr.write(`copyright: ${(err as Error).message}\n`);
    process.exit(1);
  }
}
