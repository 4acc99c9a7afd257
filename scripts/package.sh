#!/usr/bin/env bash
# Builds the Debian package with Debian's own tools (dpkg-deb; dpkg-shlibdeps for the libc
# dependency of koffi's native module; lintian checks it when installed):
#   npm run package                 -> dist/deb/knockgate_VERSION_amd64.deb
#   SKIP_BUILD=1 scripts/package.sh (after npm run build)
#   LINTIAN=0 scripts/package.sh    (skip the lintian run)
# The package holds the built program with its production node_modules (npm ci --omit=dev
# into a staging copy) under /usr/lib/knockgate, /usr/bin/knockgate, the systemd unit, the
# config /etc/knockgate/knockgate.yaml (a conffile: the example, with no interfaces: inert until
# edited), knockgate(8) and knockgate.yaml(5), bash and zsh completions, the Grafana dashboard and
# the Prometheus alert rules under /usr/share/knockgate. Maintainer scripts: packaging/debian/.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD

VERSION=$(node -p 'require("./package.json").version')
ARCH=$(dpkg --print-architecture)
if [ "$ARCH" != amd64 ]; then
  echo "package: this builds the amd64 package (koffi's native module is per architecture); this machine is $ARCH" >&2
  exit 1
fi
OUT=$ROOT/dist/deb
DEB=$OUT/knockgate_${VERSION}_${ARCH}.deb
# Reproducible dates: the last commit's time (as dpkg-buildpackage does with the changelog).
SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
export SOURCE_DATE_EPOCH

if [ -z "${SKIP_BUILD:-}" ]; then
  npm run build
fi
for f in dist/src/cli/main.js dist/src/doc/man.js bpf/knock.bpf.o; do
  [ -f "$f" ] || { echo "package: $f is missing: run npm run build first" >&2; exit 1; }
done

STAGE=$(mktemp -d "${TMPDIR:-/tmp}/kg-deb-XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
PKG=$STAGE/root
LIB=$PKG/usr/lib/knockgate
DOC=$PKG/usr/share/doc/knockgate
mkdir -p "$LIB/dist" "$LIB/bpf" "$LIB/config" "$PKG/usr/bin" "$PKG/lib/systemd/system" "$PKG/etc/knockgate" \
  "$PKG/usr/share/man/man8" "$PKG/usr/share/man/man5" "$PKG/usr/share/bash-completion/completions" \
  "$PKG/usr/share/zsh/vendor-completions" "$PKG/usr/share/knockgate" "$PKG/usr/share/lintian/overrides" "$DOC" "$PKG/DEBIAN"

# ---- the program and its production dependencies ----------------------------------------------
cp package.json package-lock.json "$LIB/"
cp -r dist/src "$LIB/dist/src"
# Not the build-time generators (man pages, conffile, copyright), nor source maps to sources not shipped.
rm -rf "$LIB/dist/src/doc"
find "$LIB/dist" -name '*.js.map' -delete
cp bpf/knock.bpf.o "$LIB/bpf/"
cp config/demo.yaml "$LIB/config/"
(cd "$LIB" && npm ci --omit=dev --no-audit --no-fund --loglevel=error >/dev/null)
rm -f "$LIB/package-lock.json"
# What npm leaves that a system package should not carry: its cache marker, and, in the
# dependencies, tests, sources of the native module and anything executable but a .node module.
# koffi: its C++ sources, build headers and installer (its JavaScript under src/ stays), and the
# musl build next to the glibc one (Debian is glibc).
rm -rf "$LIB/node_modules/.package-lock.json" "$LIB/node_modules/koffi/vendor" "$LIB/node_modules/koffi/doc" "$LIB/node_modules/koffi/cnoke.cjs" \
  "$LIB"/node_modules/@koromix/koffi-linux-x64/musl_*
find "$LIB/node_modules/koffi/src" -type f ! -name '*.js' ! -name '*.cjs' -delete
# Type declarations: @types/node comes in as a production dependency of protobufjs (etcd3's gRPC
# stack), but nothing reads .d.ts files at run time.
rm -rf "$LIB/node_modules/@types"
find "$LIB/node_modules" -type d \( -name test -o -name tests -o -name .github -o -name .husky -o -name benchmarks -o -name docs \) -prune -exec rm -rf {} +
find "$LIB/node_modules" -type f \( -name '*.md' -o -name '*.markdown' -o -name '*.html' -o -name '*.sh' -o -name '.npmignore' -o -name '.gitattributes' \
  -o -name '.eslintrc*' -o -name '.travis.yml' -o -name '.editorconfig' -o -name '*.ts' -o -name '*.map' -o -name 'Makefile' \) ! -name 'LICENSE*' -delete
find "$LIB/node_modules" -type d -empty -delete
find "$LIB" -type d -exec chmod 0755 {} +
find "$LIB" -type f -exec chmod 0644 {} +
# Scripts (a #! first line: the modules' own command-line tools, and ours) stay executable.
find "$LIB" -type f \( -name '*.js' -o -name '*.mjs' -o -name '*.cjs' \) -exec sh -c 'for f; do if head -c2 "$f" | grep -q "^#!"; then chmod 0755 "$f"; fi; done' sh {} +

# /usr/bin/knockgate runs the installed CLI with Debian's node.
cat > "$PKG/usr/bin/knockgate" <<'EOF'
#!/bin/sh
exec /usr/bin/node /usr/lib/knockgate/dist/src/cli/main.js "$@"
EOF
chmod 0755 "$PKG/usr/bin/knockgate"

# ---- the unit and the config ----------------------------------------------------------------------
# config/knockgate.service already runs /usr/bin/knockgate with /etc/knockgate/knockgate.yaml;
# its install notes are for a hand install: replace them with the package's.
awk '
  BEGIN { skip = 0 }
  /^# Install:/ { print "# Installed by the knockgate Debian package: enabled at install, started where systemd runs."; print "# The config it reads, /etc/knockgate/knockgate.yaml, lists no interfaces until edited."; skip = 1; next }
  skip && /^# Path:/ { skip = 2; next }
  skip == 1 { next }
  skip == 2 && /^#$/ { skip = 0; print; next }
  skip == 2 { next }
  { print }
' config/knockgate.service > "$PKG/lib/systemd/system/knockgate.service"
grep -q '^ExecStart=/usr/bin/knockgate run -c /etc/knockgate/knockgate.yaml$' "$PKG/lib/systemd/system/knockgate.service" \
  || { echo "package: the unit does not run /usr/bin/knockgate run -c /etc/knockgate/knockgate.yaml" >&2; exit 1; }
chmod 0644 "$PKG/lib/systemd/system/knockgate.service"

node dist/src/doc/conffile.js config/knockgate.example.yaml > "$PKG/etc/knockgate/knockgate.yaml"
chmod 0640 "$PKG/etc/knockgate/knockgate.yaml"
echo /etc/knockgate/knockgate.yaml > "$PKG/DEBIAN/conffiles"

# ---- manual pages, completions, dashboards --------------------------------------------------------
node dist/src/doc/man.js "$STAGE/man"
gzip -9n < "$STAGE/man/knockgate.8" > "$PKG/usr/share/man/man8/knockgate.8.gz"
gzip -9n < "$STAGE/man/knockgate.yaml.5" > "$PKG/usr/share/man/man5/knockgate.yaml.5.gz"
node dist/src/cli/main.js completion bash > "$PKG/usr/share/bash-completion/completions/knockgate"
node dist/src/cli/main.js completion zsh > "$PKG/usr/share/zsh/vendor-completions/_knockgate"
cp -r config/grafana config/prometheus "$PKG/usr/share/knockgate/"
find "$PKG/usr/share" -type f -exec chmod 0644 {} +

# ---- documentation, copyright, control ------------------------------------------------------------
gzip -9n < packaging/debian/changelog > "$DOC/changelog.gz"
node dist/src/doc/copyright.js packaging/debian/copyright "$LIB/node_modules" > "$DOC/copyright"
cp packaging/debian/lintian-overrides "$PKG/usr/share/lintian/overrides/knockgate"
chmod 0644 "$DOC"/* "$PKG/usr/share/lintian/overrides/knockgate"

# libc: what koffi's native module needs (dpkg-shlibdeps reads a debian/control, so give it one).
mkdir -p "$STAGE/shlibs/debian"
printf 'Source: knockgate\n\nPackage: knockgate\nArchitecture: any\n' > "$STAGE/shlibs/debian/control"
mapfile -t NATIVE < <(find "$LIB" -name '*.node' -type f)
# (It warns about every N-API symbol, which node itself provides: shown only if it fails.)
LIBC_DEPENDS=$(cd "$STAGE/shlibs" && dpkg-shlibdeps -O "${NATIVE[@]}" 2>"$STAGE/shlibdeps.log" | sed -n 's/^shlibs:Depends=//p')
[ -n "$LIBC_DEPENDS" ] || { cat "$STAGE/shlibdeps.log" >&2; echo "package: dpkg-shlibdeps found no dependency for ${NATIVE[*]}" >&2; exit 1; }
INSTALLED_SIZE=$(du -sk --exclude=DEBIAN "$PKG" | cut -f1)
sed -e "s/@VERSION@/$VERSION/" -e "s/@INSTALLED_SIZE@/$INSTALLED_SIZE/" -e "s/@LIBC_DEPENDS@/$LIBC_DEPENDS/" \
  packaging/debian/control.in > "$PKG/DEBIAN/control"
install -m 0755 packaging/debian/postinst packaging/debian/prerm packaging/debian/postrm "$PKG/DEBIAN/"
(cd "$PKG" && find . -path ./DEBIAN -prune -o -type f ! -path ./etc/\* -printf '%P\0' | sort -z | xargs -0 md5sum) > "$PKG/DEBIAN/md5sums"
chmod 0644 "$PKG/DEBIAN/control" "$PKG/DEBIAN/conffiles" "$PKG/DEBIAN/md5sums"

# Every file dated SOURCE_DATE_EPOCH, owned by root (--root-owner-group): same input, same bytes.
find "$PKG" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
mkdir -p "$OUT"
rm -f "$DEB"
dpkg-deb --root-owner-group -Zxz --build "$PKG" "$DEB" >/dev/null
echo "package: $DEB"

if [ "${LINTIAN:-1}" != 0 ]; then
  if command -v lintian >/dev/null 2>&1; then
    # Errors fail the build; warnings are printed. Tags that do not apply are overridden, each with
    # its reason, in packaging/debian/lintian-overrides (installed where lintian reads it).
    lintian --fail-on error --tag-display-limit 0 "$DEB"
  else
    echo "package: lintian is not installed (apt-get install lintian): the package was not checked" >&2
  fi
fi
