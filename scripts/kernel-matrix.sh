#!/usr/bin/env bash
# Runs a command on another kernel: boots Debian's stock 6.1 kernel (the oldest knockgate
# supports) under qemu with this machine's root shared read-only over 9p plus a tmpfs overlay,
# runs the command in the repository there, and powers off.
#
#   scripts/kernel-matrix.sh                      (as root) two guests, one after the other:
#       node scripts/run-tests.mjs matrix         the layout tests and the XDP test tables
#       node scripts/run-tests.mjs share          libxdp's dispatcher: the XDP tables through it and
#                                                 the lab sharing a veth with xdp-filter (a guest of
#                                                 its own, bounded by --share-timeout, default 1800)
#   scripts/kernel-matrix.sh -- CMD ARGS...       any other command, from the repository directory
#   scripts/kernel-matrix.sh --kernel 6.1.0-56-amd64 --timeout SECONDS (default 3600) --accel auto|kvm|tcg -- ...
#
# Prints the command's stdout and stderr and exits with its exit code (the first failing one of
# the two default guests; both run); 125 when the guest could not be booted, 124 when the command
# ran past its timeout. CI=true is passed through.
# Environment: KG_MATRIX_CACHE (default /var/cache/knockgate-matrix), KG_MATRIX_BOOT_TIMEOUT
# (seconds to the guest's first command, default 90), KG_MATRIX_MEMORY (MiB, default 3072),
# KG_MATRIX_KEEP=1 (keep the guest's console log), KG_MATRIX_APPEND (more kernel parameters),
# KG_MATRIX_CPU (qemu's -cpu under TCG, default max).
#
# Everything it needs comes from Debian's apt and is cached per kernel version:
#   qemu-system-x86, kmod, cpio, xz-utils   installed with apt-get (idempotent)
#   linux-image-<version>, busybox-static   fetched with `apt-get download` and unpacked into
#       the cache, not installed: installing a kernel package runs initramfs and bootloader
#       hooks on this machine, and busybox-static conflicts with the busybox package.
# The cache (<cache>/<version>/) holds the uncompressed vmlinux (booted through its PVH entry,
# which skips the bzImage's xz decompression, seconds under TCG), the bzImage as a fallback, and
# the initramfs. See scripts/matrix/init for the guest side.
#
# In the guest: the host's files as they were at boot, read-only underneath and writable into
# a tmpfs (writes vanish at power-off); /tmp and /run are fresh tmpfs, so a script to run must
# not live in the host's /tmp. KG_MATRIX_KERNEL names the kernel. Under TCG everything runs
# ~10x slower than on the host: tests with tight timeouts can fail there for that reason alone.
#
# Accelerator: KVM only when a short bounded boot with it succeeds (on some machines /dev/kvm
# exists but a guest hangs); else TCG, multi-threaded. The probe's answer is cached per host
# kernel and qemu version (<cache>/accel-*; delete it to probe again). Every boot has a timeout,
# and a boot that hangs before the command starts (about 1 in 40 under TCG) is retried once.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd -P)
MATRIX_DIR="$REPO/scripts/matrix"
CACHE=${KG_MATRIX_CACHE:-/var/cache/knockgate-matrix}
BOOT_TIMEOUT=${KG_MATRIX_BOOT_TIMEOUT:-90}
KVM_PROBE_TIMEOUT=30
MEMORY=${KG_MATRIX_MEMORY:-3072}
CPUS=$(nproc)
TIMEOUT=3600
SHARE_TIMEOUT=1800
ACCEL=auto
KVER=
# The initramfs loads these (and what they depend on) at boot: the virtio transport, console
# ports and 9p for the host root, overlay for the writable layer, and what the kernel tests
# create (veth pairs; ipv6, bpffs, netns, tcp/udp and fq_codel are built into Debian's kernel).
MODULES=(virtio_pci virtio_console 9pnet_virtio 9p overlay veth)
# These are in the initramfs too but load only when the kernel asks for them (each insmod costs
# ~0.2 s under TCG): what a test may reach for (ss, tc with clsact and BPF, dummy and tun devices).
LAZY_MODULES=(dummy tun sch_ingress cls_bpf act_bpf inet_diag tcp_diag udp_diag raw_diag)
APT_PACKAGES=(qemu-system-x86 kmod cpio xz-utils)

usage() {
  awk 'NR > 1 && /^# Everything/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"
  exit "${1:-0}"
}
say() { echo "kernel-matrix: $*" >&2; }
die() {
  say "$*"
  exit 125
}

cmd=()
while [ $# -gt 0 ]; do
  case "$1" in
    --kernel) KVER=${2:?--kernel needs a version, e.g. 6.1.0-56-amd64}; shift 2 ;;
    --timeout) TIMEOUT=${2:?--timeout needs seconds}; shift 2 ;;
    --share-timeout) SHARE_TIMEOUT=${2:?--share-timeout needs seconds}; shift 2 ;;
    --accel) ACCEL=${2:?--accel needs auto, kvm or tcg}; shift 2 ;;
    -h | --help) usage 0 ;;
    --) shift; cmd=("$@"); break ;;
    *) say "unknown argument $1"; usage 2 ;;
  esac
done
case "$ACCEL" in auto | kvm | tcg) ;; *) die "--accel must be auto, kvm or tcg" ;; esac
[[ "$TIMEOUT" =~ ^[0-9]+$ ]] || die "--timeout must be a number of seconds"
[[ "$SHARE_TIMEOUT" =~ ^[0-9]+$ ]] || die "--share-timeout must be a number of seconds"
DEFAULT_JOBS=
if [ ${#cmd[@]} -eq 0 ]; then
  DEFAULT_JOBS=1
  cmd=(node scripts/run-tests.mjs matrix)
fi

QEMU_PID=
RUN_DIR=
WORK=
cleanup() {
  if [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; then kill -KILL "$QEMU_PID" 2>/dev/null || true; fi
  if [ -n "$RUN_DIR" ] && [ -n "${KG_MATRIX_KEEP:-}" ]; then
    say "kept the guest's console and output in $RUN_DIR/boot"
  elif [ -n "$RUN_DIR" ]; then
    rm -rf "$RUN_DIR"
  fi
  if [ -n "$WORK" ]; then rm -rf "$WORK" "$CACHE/$KVER.new"; fi
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM

# ---- packages ------------------------------------------------------------------------------

apt_updated=
apt_update() {
  if [ -z "$apt_updated" ]; then
    apt-get update -qq
    apt_updated=1
  fi
}

install_packages() {
  local missing=() p
  for p in "${APT_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0): ${missing[*]} must be installed"
  say "installing ${missing[*]}"
  apt_update
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

# The newest linux-image-6.1.0-N-amd64 apt knows (the generic flavour: -cloud has no 9p).
newest_61() {
  local p candidate
  for p in $(apt-cache pkgnames linux-image-6.1.0- 2>/dev/null |
    grep -E '^linux-image-6\.1\.0-[0-9]+-amd64$' | sort -t- -k4,4nr); do
    candidate=$(apt-cache policy "$p" 2>/dev/null | sed -n 's/^ *Candidate: //p')
    if [ -n "$candidate" ] && [ "$candidate" != "(none)" ]; then
      echo "${p#linux-image-}"
      return 0
    fi
  done
  return 1
}

KVER_GIVEN=
pick_kernel() {
  if [ -n "$KVER" ]; then
    KVER_GIVEN=1
    [[ "$KVER" == *-amd64 ]] || KVER="$KVER-amd64"
    return 0
  fi
  # apt-cache takes ~1 s a call here: remember the answer until apt's lists change.
  local known="$CACHE/newest-6.1" lists
  lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0)
  if [ -f "$known" ] && [ "$(cut -d' ' -f1 "$known")" = "$lists" ]; then
    KVER=$(cut -d' ' -f2 "$known")
    return 0
  fi
  KVER=$(newest_61 || true)
  if [ -z "$KVER" ] && [ "$(id -u)" -eq 0 ]; then
    apt_update
    lists=$(stat -c %Y /var/lib/apt/lists 2>/dev/null || echo 0)
    KVER=$(newest_61 || true)
  fi
  if [ -n "$KVER" ]; then
    if mkdir -p "$CACHE"; then echo "$lists $KVER" >"$known" || true; fi
    return 0
  fi
  if [ -z "$KVER" ]; then # offline: the newest one already prepared
    KVER=$(find "$CACHE" -mindepth 2 -maxdepth 2 -name stamp -printf '%h\n' 2>/dev/null |
      xargs -r -n1 basename | grep -E '^6\.1\.0-[0-9]+-amd64$' | sort -t- -k2,2n -r | head -n1 || true)
  fi
  [ -n "$KVER" ] || die "no linux-image-6.1.0-*-amd64 package known to apt (is this Debian 12 with its security updates?)"
}

# ---- kernel and initramfs, cached --------------------------------------------------------

# Unpack package $1 (apt-get download) into directory $2.
fetch_deb() {
  local pkg=$1 dest=$2 tmp
  tmp=$(mktemp -d "$CACHE/.fetch.XXXXXX")
  if ! (cd "$tmp" && apt-get download -q "$pkg" >/dev/null 2>&1); then
    apt_update
    (cd "$tmp" && apt-get download -q "$pkg" >/dev/null) || {
      rm -rf "$tmp"
      die "apt-get download $pkg failed"
    }
  fi
  # apt-get download runs unsandboxed as root here (the _apt user cannot write $tmp); harmless.
  mkdir -p "$dest"
  dpkg-deb -x "$tmp"/*.deb "$dest"
  rm -rf "$tmp"
}

# The uncompressed ELF vmlinux inside bzImage $1 (Debian compresses x86 kernels with xz).
extract_vmlinux() {
  local img=$1 out=$2 off
  off=$(LC_ALL=C grep -obUaP '\xFD7zXZ\x00' "$img" | LC_ALL=C cut -d: -f1 | sed -n 1p)
  [ -n "$off" ] || return 1
  tail -c +"$((off + 1))" "$img" | xz -dc --single-stream >"$out.tmp" 2>/dev/null || true
  [ "$(head -c 4 "$out.tmp" | od -An -tx1 | tr -d ' ')" = 7f454c46 ] || {
    rm -f "$out.tmp"
    return 1
  }
  mv "$out.tmp" "$out"
}

# A recipe hash: the cached initramfs is rebuilt when the guest side or the module list changes.
recipe() {
  { cat "$MATRIX_DIR/init" "$MATRIX_DIR/modprobe"; echo "${MODULES[*]} / ${LAZY_MODULES[*]}"; } | sha256sum | cut -c1-16
}

prepare() {
  local dir="$CACHE/$KVER" want work stage mods bb
  want="$(recipe)"
  mkdir -p "$CACHE"
  exec 9>"$CACHE/.lock"
  flock 9 # another run may be preparing the same cache
  if [ -f "$dir/stamp" ] && [ "$(cat "$dir/stamp")" = "$want" ]; then
    exec 9>&-
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "run as root (sudo $0) to prepare the cache $dir"
  local t0=$SECONDS
  say "preparing kernel $KVER and its initramfs in $dir"
  work=$(mktemp -d "$CACHE/.work.XXXXXX")
  WORK=$work # removed by cleanup() if this fails half-way
  fetch_deb "linux-image-$KVER" "$work/k"
  fetch_deb busybox-static "$work/bb"
  local img="$work/k/boot/vmlinuz-$KVER"
  [ -f "$img" ] || die "linux-image-$KVER has no /boot/vmlinuz-$KVER"
  grep -q '^CONFIG_NET_9P_VIRTIO=m\|^CONFIG_NET_9P_VIRTIO=y' "$work/k/boot/config-$KVER" ||
    die "kernel $KVER has no 9p over virtio: it cannot mount the host root (use the generic -amd64 flavour)"
  depmod -b "$work/k" "$KVER"

  stage="$work/initramfs"
  mkdir -p "$stage"/{bin,sbin,etc,proc,sys,dev,mnt,newroot,lib/modules/"$KVER"}
  bb="$work/bb/bin/busybox"
  cp "$bb" "$stage/bin/busybox"
  for applet in $("$bb" --list); do
    [ -e "$stage/bin/$applet" ] || ln -s busybox "$stage/bin/$applet"
  done
  install -m 0755 "$MATRIX_DIR/init" "$stage/init"
  install -m 0755 "$MATRIX_DIR/modprobe" "$stage/sbin/modprobe"
  # modprobe --show-depends prints "insmod PATH" lines in load order, dependencies first.
  local seen="" path rel list
  : >"$stage/etc/kg-modules.order"
  for list in MODULES LAZY_MODULES; do
    local -n names=$list
    mods=$(modprobe -d "$work/k" -S "$KVER" --show-depends -a "${names[@]}") ||
      die "modprobe --show-depends failed for ${names[*]}"
    while read -r verb path _; do
      [ "$verb" = insmod ] || continue
      rel=${path#"$work/k"}
      case " $seen " in *" $rel "*) continue ;; esac
      seen="$seen $rel"
      mkdir -p "$stage$(dirname "$rel")"
      case "$rel" in # newer kernels ship compressed modules: busybox insmod wants them plain
        *.ko.xz) rel=${rel%.xz}; xz -dc "$path" >"$stage$rel" ;;
        *.ko.zst) rel=${rel%.zst}; zstd -qdc "$path" >"$stage$rel" ;;
        *.ko.gz) rel=${rel%.gz}; gzip -dc "$path" >"$stage$rel" ;;
        *) cp "$path" "$stage$rel" ;;
      esac
      if [ "$list" = MODULES ]; then echo "$rel" >>"$stage/etc/kg-modules.order"; fi
    done <<<"$mods"
    unset -n names
  done
  cp "$work/k/lib/modules/$KVER"/modules.{order,builtin,builtin.modinfo} "$stage/lib/modules/$KVER/"
  depmod -b "$stage" "$KVER"
  (cd "$stage" && find . -print0 | LC_ALL=C sort -z | cpio --null -o -H newc --quiet) >"$work/initramfs.cpio"

  mkdir -p "$dir.new"
  cp "$img" "$dir.new/bzImage"
  cp "$work/k/boot/config-$KVER" "$dir.new/config"
  extract_vmlinux "$img" "$dir.new/vmlinux" || say "could not extract vmlinux from the bzImage: booting the bzImage (slower)"
  mv "$work/initramfs.cpio" "$dir.new/initramfs.cpio"
  echo "$want" >"$dir.new/stamp"
  rm -rf "$dir"
  mv "$dir.new" "$dir"
  if [ -z "$KVER_GIVEN" ]; then # a newer 6.1 replaces the older ones (~80 MB each)
    find "$CACHE" -mindepth 1 -maxdepth 1 -type d -name '6.1.0-*-amd64' ! -name "$KVER" -exec rm -rf {} +
  fi
  rm -rf "$work"
  WORK=
  exec 9>&-
  say "prepared in $((SECONDS - t0)) s"
}

# ---- booting ------------------------------------------------------------------------------


# Print what file $1 gained since offset variable $2 to fd $3.
flush() {
  local file=$1 var=$2 fd=$3 size off
  off=${!var}
  size=$(stat -c %s "$file" 2>/dev/null || echo 0)
  if [ "$size" -gt "$off" ]; then
    tail -c +"$((off + 1))" "$file" | head -c "$((size - off))" >&"$fd"
    printf -v "$var" %s "$size"
  fi
}

# boot ACCEL JOB BOOT_TIMEOUT RUN_TIMEOUT STREAM: 0 when the job ran (its code in $RUN_DIR/status),
# 2 when the guest did not reach the job in time, 3 when the job ran past its timeout,
# 4 when qemu stopped without an answer from the guest.
boot() {
  local accel=$1 job=$2 boot_timeout=$3 run_timeout=$4 stream=$5 d="$RUN_DIR/boot"
  local kernel="$CACHE/$KVER/vmlinux" cpu_accel
  rm -rf "$d"
  mkdir -p "$d"
  : >"$d/status"
  : >"$d/out"
  : >"$d/err"
  [ -f "$kernel" ] || kernel="$CACHE/$KVER/bzImage"
  if [ "$accel" = kvm ]; then
    cpu_accel=(-accel kvm -cpu host)
  else
    # shellcheck disable=SC2054 # the commas belong to qemu's option
    cpu_accel=(-accel tcg,thread=multi -cpu "${KG_MATRIX_CPU:-max}")
  fi
  # qemu runs under a small launcher whose stderr is the log, so that when qemu aborts (as it
  # does with KVM on some machines) bash's "Aborted <command line>" goes there, not to the user.
  (
    qemu-system-x86_64 -nodefaults -no-user-config -nographic -no-reboot \
      -machine pc "${cpu_accel[@]}" -smp "$CPUS" -m "$MEMORY" \
      -kernel "$kernel" -initrd "$CACHE/$KVER/initramfs.cpio" \
      -append "console=ttyS0 quiet loglevel=4 panic=-1 mitigations=off ${KG_MATRIX_APPEND:-} kg.job=$job" \
      -serial "file:$d/console" -monitor none \
      -virtfs local,path=/,mount_tag=hostroot,security_model=none,readonly=on,multidevs=remap \
      -device virtio-serial-pci \
      -chardev "file,id=kgstatus,path=$d/status" -device virtserialport,chardev=kgstatus,name=kg.status \
      -chardev "file,id=kgout,path=$d/out" -device virtserialport,chardev=kgout,name=kg.out \
      -chardev "file,id=kgerr,path=$d/err" -device virtserialport,chardev=kgerr,name=kg.err \
      </dev/null >"$d/qemu.log" 2>&1 &
    echo $! >"$d/qemu.pid"
    wait $!
  ) 2>>"$d/qemu.log" &
  local launcher=$!
  while [ ! -s "$d/qemu.pid" ] && kill -0 "$launcher" 2>/dev/null; do sleep 0.05; done
  QEMU_PID=$(cat "$d/qemu.pid" 2>/dev/null || true)
  # shellcheck disable=SC2034 # out_off and err_off are updated by name in flush()
  local start=$SECONDS booted="" out_off=0 err_off=0 result=4
  while [ -n "$QEMU_PID" ] && kill -0 "$QEMU_PID" 2>/dev/null; do
    if [ -z "$booted" ]; then
      if grep -q '^booted' "$d/status"; then
        booted=$SECONDS
      elif grep -q '^fail' "$d/status"; then
        : # the guest powers itself off
      elif [ $((SECONDS - start)) -ge "$boot_timeout" ]; then
        result=2
        break
      fi
    elif [ $((SECONDS - booted)) -ge "$run_timeout" ]; then
      result=3
      break
    fi
    if [ -n "$stream" ]; then
      flush "$d/out" out_off 1
      flush "$d/err" err_off 2
    fi
    sleep 0.5
  done
  if kill -0 "$QEMU_PID" 2>/dev/null; then
    kill -KILL "$QEMU_PID" 2>/dev/null || true
  fi
  wait "$launcher" 2>/dev/null || true
  QEMU_PID=
  if [ -n "$stream" ]; then
    flush "$d/out" out_off 1
    flush "$d/err" err_off 2
  fi
  if [ "$result" -eq 4 ] && grep -q '^rc=' "$d/status"; then result=0; fi
  if [ "$result" -eq 4 ] && [ -z "$booted" ] && ! grep -q '^fail' "$d/status" && [ ! -s "$d/qemu.log" ]; then
    result=2 # qemu ended before the job started, silently (e.g. a reset during boot)
  fi
  return "$result"
}

# The tail of the guest's console and of qemu's own output, for a failed boot.
show_boot_log() {
  local d="$RUN_DIR/boot"
  if [ -s "$d/qemu.log" ]; then
    say "qemu said:"
    tail -n 20 "$d/qemu.log" >&2
  fi
  if [ -s "$d/status" ]; then say "guest status: $(tr '\n' ' ' <"$d/status")"; fi
  say "guest console (last lines):"
  tail -n 30 "$d/console" | sed 's/\x1b\[[0-9;?]*[A-Za-z]//g' >&2 || true
  echo >&2
}

write_job() { # write_job FILE CMD...
  local file=$1
  shift
  {
    echo '#!/bin/bash'
    printf 'cd %q || exit 125\n' "$REPO"
    if [ -n "${CI+x}" ]; then printf 'export CI=%q\n' "$CI"; fi
    printf 'export KG_MATRIX_KERNEL=%q\n' "$KVER"
    printf 'exec'
    printf ' %q' "$@"
    echo
  } >"$file"
  chmod 0644 "$file"
}

pick_accel() {
  if [ "$ACCEL" != auto ]; then
    echo "$ACCEL"
    return 0
  fi
  if [ ! -c /dev/kvm ] || [ ! -r /dev/kvm ] || [ ! -w /dev/kvm ]; then
    echo tcg
    return 0
  fi
  local key qv
  qv=$(qemu-system-x86_64 --version | sed -n 1p | tr -c 'A-Za-z0-9.\n' _)
  key="$CACHE/accel-$(uname -r)-$qv"
  if [ -f "$key" ]; then
    cat "$key"
    return 0
  fi
  say "probing KVM with a ${KVM_PROBE_TIMEOUT} s boot"
  write_job "$RUN_DIR/probe.sh" true
  local verdict=tcg
  if boot kvm "$RUN_DIR/probe.sh" "$KVM_PROBE_TIMEOUT" "$KVM_PROBE_TIMEOUT" "" && grep -q '^rc=0' "$RUN_DIR/boot/status"; then
    verdict=kvm
  else
    local why
    why=$(grep -m1 -i 'error' "$RUN_DIR/boot/qemu.log" 2>/dev/null || true)
    say "KVM is not usable here (${why:-the probe boot did not finish in ${KVM_PROBE_TIMEOUT} s}): using TCG"
  fi
  echo "$verdict" >"$key" 2>/dev/null || true
  echo "$verdict"
}

# ---- main -----------------------------------------------------------------------------------

install_packages
pick_kernel
prepare

if [ ! -d "$REPO/dist" ] || [ ! -f "$REPO/bpf/knock.bpf.o" ]; then
  say "dist/ or bpf/knock.bpf.o is missing: npm run build"
  (cd "$REPO" && npm run build) >&2
fi

# The job file must be readable by the guest through the shared root, outside its tmpfs /tmp.
RUN_DIR=$(mktemp -d "$CACHE/.run.XXXXXX")
chmod 0755 "$RUN_DIR"
accel=$(pick_accel)

# run_job TIMEOUT CMD...: one guest running CMD; returns its exit code (125 no boot, 124 timeout).
run_job() {
  local timeout=$1 t0=$SECONDS attempt=1 r rc
  shift
  write_job "$RUN_DIR/job.sh" "$@"
  say "kernel $KVER, $accel, ${CPUS} CPUs, ${MEMORY} MiB: $*"
  while :; do
    set +e
    boot "$accel" "$RUN_DIR/job.sh" "$BOOT_TIMEOUT" "$timeout" stream
    r=$?
    set -e
    case $r in
      0)
        rc=$(sed -n 's/^rc=//p' "$RUN_DIR/boot/status" | tail -n1)
        say "guest command exited with $rc after $((SECONDS - t0)) s"
        return "$rc"
        ;;
      2)
        show_boot_log
        if [ $attempt -ge 2 ]; then
          say "the guest did not boot (twice, ${BOOT_TIMEOUT} s each)"
          return 125
        fi
        say "the guest did not reach the command within ${BOOT_TIMEOUT} s: booting once more"
        attempt=2
        ;;
      3)
        show_boot_log
        say "the command ran past its timeout (${timeout} s): guest stopped"
        return 124
        ;;
      *)
        show_boot_log
        say "the guest stopped without an exit code"
        return 125
        ;;
    esac
  done
}

rc=0
run_job "$TIMEOUT" "${cmd[@]}" || rc=$?
if [ -n "$DEFAULT_JOBS" ]; then
  # libxdp's dispatcher and the sharing lab: a guest of their own, bounded on its own, so that the
  # lab's daemon starts (~1 min each under TCG) never eat the tables' time.
  share_rc=0
  run_job "$SHARE_TIMEOUT" node scripts/run-tests.mjs share || share_rc=$?
  if [ "$rc" -eq 0 ]; then rc=$share_rc; fi
fi
exit "$rc"
