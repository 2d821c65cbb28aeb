#!/usr/bin/env bash
# The kernel WireGuard backend, end to end, in a virtual machine (issue 12).
#
# The test machines' own kernel has no WireGuard module, so this boots
# Debian's cloud kernel under qemu (TCG: software emulation, no KVM needed)
# with an initramfs holding the gateway binary and the real tools it drives
# (iproute2, wireguard-tools, iptables-nft, nginx with the stream module,
# procps sysctl) plus curl, openssl and python3 for the node and the client.
# Inside, scripts/vm/guest-test.sh runs the end-to-end checks with
# --wireguard-backend kernel and with auto; the guest prints its exit status
# on the serial console and this script exits with it.
#
# Usage: scripts/vm-test.sh            (installs what it needs with apt)
# Environment:
#   GATEWAY_BIN   gateway binary to test (default: `cargo build --locked`,
#                 the debug binary the test suite builds anyway)
#   VM_CACHE      where the unpacked kernel is kept (default: target/vm)
#   VM_TIMEOUT    hard limit on the VM's run, in seconds (default: 900; the run
#                 takes about 70 s on an idle 2-core machine, 5 min on a busy one)
#   VM_SMP        virtual CPUs (default: 2)
#   VM_KEEP=1     keep the temporary appliance directory (its path is printed)
#   VM_VERBOSE=1  print the daemon's whole log (but its read commands) in the guest
set -euo pipefail
cd "$(dirname "$0")/.."
REPO=$PWD
T0=$(date +%s%N)

say() { printf '\n== vm-test: %s\n' "$*"; }
die() { printf '\nvm-test: FAILED: %s\n' "$*" >&2; exit 1; }
since() { awk -v a="$1" -v b="$(date +%s%N)" 'BEGIN { printf "%.1f", (b - a) / 1e9 }'; }

CACHE=${VM_CACHE:-$REPO/target/vm}
VM_TIMEOUT=${VM_TIMEOUT:-900}
VM_SMP=${VM_SMP:-2}
# Search the system directories first: a pyenv or similar python3 on PATH
# is not what goes into the appliance.
SYSPATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
PY=/usr/bin/python3

WORK=""
KNEW=""
QEMU_PID=""
TAIL_PID=""
cleanup() {
  # timeout passes the signal on to qemu.
  if [ -n "$QEMU_PID" ]; then kill "$QEMU_PID" 2>/dev/null || true; wait "$QEMU_PID" 2>/dev/null || true; fi
  if [ -n "$TAIL_PID" ]; then kill "$TAIL_PID" 2>/dev/null || true; fi
  if [ -n "$KNEW" ]; then rm -rf "$KNEW"; fi
  if [ -n "$WORK" ] && [ -d "$WORK" ]; then
    if [ "${VM_KEEP:-0}" = 1 ]; then echo "vm-test: kept $WORK"; else rm -rf "$WORK"; fi
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

as_root() {
  if [ "$(id -u)" -eq 0 ]; then "$@"; elif command -v sudo >/dev/null; then sudo "$@"; else
    die "need root to install packages ($*); run as root or install them first"
  fi
}

# --- 1. Host tools ----------------------------------------------------------
say "host tools: qemu, kmod, cpio, busybox and what goes into the appliance"
# Each command (looked up in the system directories) and its Debian package.
declare -A pkg_of=(
  [qemu-system-x86_64]=qemu-system-x86 [depmod]=kmod [kmod]=kmod [cpio]=cpio [busybox]=busybox-static
  [bash]=bash [ip]=iproute2 [ss]=iproute2 [wg]=wireguard-tools [xtables-nft-multi]=iptables
  [sysctl]=procps [nginx]=nginx [curl]=curl [openssl]=openssl
)
# syspath NAME: NAME's executable in the system directories (bash's
# `command -v` also names a file that is there but not executable).
syspath() {
  local p
  p=$(PATH=$SYSPATH command -v "$1") && [ -x "$p" ] && echo "$p"
}
missing=()
for c in "${!pkg_of[@]}"; do syspath "$c" >/dev/null || missing+=("${pkg_of[$c]}"); done
[ -f /usr/lib/nginx/modules/ngx_stream_module.so ] || missing+=(libnginx-mod-stream)
[ -x "$PY" ] || missing+=(python3)
if [ "${#missing[@]}" -gt 0 ]; then
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  [ -x "$(command -v apt-get)" ] ||
    die "missing on this host: ${missing[*]} (Debian packages), and there is no apt-get to install them; install them (qemu-system-x86_64 and the tools the appliance copies) and rerun"
  echo "vm-test: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  as_root apt-get update -qq
  # --no-remove: never take anything away from the host to make room (a
  # qemu-utils from backports, say, conflicts with bookworm's qemu-system).
  if ! as_root apt-get install -y -qq --no-install-recommends --no-remove "${missing[@]}"; then
    # A host whose qemu-utils is a backport (this kind of machine ships one)
    # takes qemu-system from the same backports suite, added for this one
    # install and taken away again; nothing installed is removed.
    case "$(dpkg-query -W -f='${Version}' qemu-utils 2>/dev/null)" in
      *~bpo*) ;;
      *) die "could not install ${missing[*]} with apt-get without removing other packages (see above); install them to suit this machine and rerun" ;;
    esac
    suite="$(sed -n 's/^VERSION_CODENAME=//p' /etc/os-release)-backports"
    src=/etc/apt/sources.list.d/gateway-vm-test-backports.sources
    echo "vm-test: qemu-utils is a backport: installing from $suite"
    printf 'Types: deb\nURIs: http://deb.debian.org/debian\nSuites: %s\nComponents: main\nSigned-By: /usr/share/keyrings/debian-archive-keyring.gpg\n' "$suite" |
      as_root tee "$src" >/dev/null
    ok=1
    as_root apt-get update -qq && as_root apt-get install -y -qq --no-install-recommends --no-remove -t "$suite" "${missing[@]}" || ok=0
    as_root rm -f "$src"
    [ "$ok" = 1 ] ||
      die "could not install ${missing[*]} from $suite without removing other packages (see above); install them to suit this machine and rerun"
  fi
fi
QEMU=$(syspath qemu-system-x86_64) || die "qemu-system-x86_64 is still missing after installing qemu-system-x86"

# --- 2. The gateway binary ----------------------------------------------------
if [ -n "${GATEWAY_BIN:-}" ]; then
  BIN=$GATEWAY_BIN
  say "gateway binary from GATEWAY_BIN: $BIN"
else
  say "gateway binary: cargo build --locked"
  cargo build --locked
  BIN=${CARGO_TARGET_DIR:-$REPO/target}/debug/gateway
fi
[ -x "$BIN" ] || die "no gateway binary at $BIN"

# --- 3. The kernel (cached) ---------------------------------------------------
KDIR=$CACHE/kernel
if [ -f "$KDIR/vmlinuz" ] && [ -f "$KDIR/version" ] && [ -d "$KDIR/lib/modules/$(cat "$KDIR/version")" ]; then
  say "kernel from the cache: $(cat "$KDIR/package") ($KDIR)"
else
  say "kernel: downloading Debian's cloud kernel (cached in $KDIR)"
  if [ ! -x "$(command -v apt-get)" ] || [ ! -x "$(command -v dpkg-deb)" ]; then
    die "no kernel cached in $KDIR, and no apt-get and dpkg-deb to download Debian's linux-image-cloud-amd64"
  fi
  dl=$(mktemp -d "${TMPDIR:-/tmp}/gateway-vm-kernel.XXXXXX")
  WORK=$dl # removed on exit if anything fails
  resolve() { apt-cache depends --important linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-/ { print $2; exit }'; }
  pkg=$(resolve)
  if [ -z "$pkg" ]; then
    as_root apt-get update -qq
    pkg=$(resolve)
  fi
  [ -n "$pkg" ] || die "apt knows no linux-image-cloud-amd64 (is this Debian with main in its sources?)"
  (cd "$dl" && apt-get -q -o APT::Sandbox::User=root download "$pkg") || die "apt-get download $pkg failed"
  dpkg-deb -x "$dl"/"$pkg"_*.deb "$dl/x"
  kver=${pkg#linux-image-}
  src=$dl/x/lib/modules/$kver
  if [ ! -f "$dl/x/boot/vmlinuz-$kver" ] || [ ! -d "$src" ]; then die "$pkg holds no vmlinuz-$kver or modules"; fi
  # Only what the tests load: networking (netfilter, bridge, IPv6, UDP
  # tunnels), WireGuard and veth, and the crypto they need.
  mkdir -p "$CACHE"
  new=$(mktemp -d "$CACHE/kernel.new.XXXXXX")
  KNEW=$new # a half-made cache entry goes on failure
  mkdir -p "$new/lib/modules/$kver/kernel/drivers/net" "$new/lib/modules/$kver/kernel/arch/x86"
  cp -a "$src/kernel/net" "$src/kernel/lib" "$src/kernel/crypto" "$new/lib/modules/$kver/kernel/"
  cp -a "$src/kernel/arch/x86/crypto" "$new/lib/modules/$kver/kernel/arch/x86/"
  cp -a "$src/kernel/drivers/net/wireguard" "$src/kernel/drivers/net/veth.ko" "$new/lib/modules/$kver/kernel/drivers/net/"
  cp -a "$src/modules.builtin" "$src/modules.builtin.modinfo" "$src/modules.order" "$new/lib/modules/$kver/"
  PATH=$SYSPATH depmod -b "$new" "$kver"
  cp "$dl/x/boot/vmlinuz-$kver" "$new/vmlinuz"
  echo "$pkg" > "$new/package"
  echo "$kver" > "$new/version"
  rm -rf "$KDIR"
  mv "$new" "$KDIR"
  KNEW=""
  rm -rf "$dl"
  WORK=""
fi
KVER=$(cat "$KDIR/version")

# --- 4. The appliance: an initramfs with the tools and their libraries --------
say "appliance: initramfs with the gateway, its tools and their libraries"
T_BUILD=$(date +%s%N)
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gateway-vm.XXXXXX")
R=$WORK/root
mkdir -p "$R"/usr/{bin,sbin,lib,lib64,local/bin,local/busybox} "$R"/{proc,sys,dev,run,tmp,root,etc,vm} \
  "$R"/var/{lib/nginx,log/nginx}
for d in bin sbin lib lib64; do ln -s "usr/$d" "$R/$d"; done
ln -s /run "$R/var/run"
chmod 1777 "$R/tmp"

ELFS=()
# put SRC DEST: a file (symlinks followed) into the appliance; ELF files get
# their libraries too.
put() {
  local src=$1 dest=$R$2
  [ -e "$src" ] || die "missing on the host: $src"
  mkdir -p "$(dirname "$dest")"
  cp -L "$src" "$dest"
  if head -c4 "$dest" | grep -q 'ELF'; then ELFS+=("$dest"); fi
}
# tool NAME DIR: the host's NAME (found in the system directories) as DIR/NAME.
tool() {
  local path
  path=$(syspath "$1") || die "tool $1 not found on the host"
  put "$path" "$2/$1"
}

tool bash /usr/bin
tool ip /usr/bin
tool ss /usr/bin
tool wg /usr/bin
tool curl /usr/bin
tool openssl /usr/bin
tool sysctl /usr/sbin
tool nginx /usr/sbin
tool kmod /usr/bin
for l in modprobe insmod rmmod lsmod modinfo depmod; do ln -s ../bin/kmod "$R/usr/sbin/$l"; done
# iptables: the nft variant, with the links update-alternatives would make.
tool xtables-nft-multi /usr/sbin
for l in iptables iptables-save iptables-restore iptables-nft iptables-nft-save iptables-nft-restore \
  ip6tables ip6tables-save ip6tables-restore; do
  ln -s xtables-nft-multi "$R/usr/sbin/$l"
done
xt=$(dirname "$(PATH=$SYSPATH ldd "$(syspath xtables-nft-multi)" | awk '/libxtables/ { print $3 }')")/xtables
[ -d "$xt" ] || die "iptables extensions not found (looked in $xt)"
for f in "$xt"/*.so; do put "$f" "$f"; done
put /usr/lib/nginx/modules/ngx_stream_module.so /usr/lib/nginx/modules/ngx_stream_module.so
# The gateway itself, without its debug info (a smaller initramfs).
if command -v strip >/dev/null; then
  strip --strip-debug -o "$WORK/gateway" "$BIN"
  put "$WORK/gateway" /usr/local/bin/gateway
else
  put "$BIN" /usr/local/bin/gateway
fi

# python3 and the standard modules the node server and the guest test import.
put "$(readlink -f "$PY")" /usr/bin/python3
# (json for the guest test; encodings.idna, which socket.getfqdn loads late.)
mapfile -t pyfiles < <("$PY" -I - "$REPO/tests/support/node_server.py" json encodings.idna <<'PYEOF'
import ast, importlib, os, sys
names = set(sys.argv[2:])
for node in ast.walk(ast.parse(open(sys.argv[1]).read())):
    if isinstance(node, ast.Import):
        names.update(a.name for a in node.names)
    elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
        names.add(node.module)
for n in sorted(names):
    importlib.import_module(n)
for m in list(sys.modules.values()):
    for f in (getattr(m, "__file__", None), getattr(m, "__cached__", None)):
        if f and os.path.isfile(f):
            print(os.path.abspath(f))
PYEOF
)
[ "${#pyfiles[@]}" -gt 10 ] || die "could not list python3's modules"
for f in "${pyfiles[@]}"; do put "$f" "$f"; done

# busybox for the init script and the small commands (cat, grep, awk, ...):
# in its own directory, last on PATH, so the real tools win.
bb=$(syspath busybox)
put "$bb" /usr/local/busybox/busybox
for a in $("$bb" --list); do
  [ "$a" = busybox ] || ln -s busybox "$R/usr/local/busybox/$a"
done
ln -s ../local/busybox/busybox "$R/usr/bin/sh"

# Every library of every ELF file (ldd follows the dependencies' dependencies).
declare -A seen=()
for f in "${ELFS[@]}"; do
  while read -r lib; do
    if [ -z "$lib" ] || [ -n "${seen[$lib]:-}" ]; then continue; fi
    seen[$lib]=1
    mkdir -p "$R$(dirname "$lib")"
    cp -L "$lib" "$R$lib"
  done < <(PATH=$SYSPATH ldd "$f" 2>/dev/null | awk '$2 == "=>" && $3 ~ /^\// { print $3 } $1 ~ /^\// { print $1 }')
done

# Configuration files the tools read.
cat > "$R/etc/passwd" <<'EOF'
root:x:0:0:root:/root:/usr/bin/bash
www-data:x:33:33:www-data:/var/www:/usr/sbin/nologin
nobody:x:65534:65534:nobody:/nonexistent:/usr/sbin/nologin
EOF
cat > "$R/etc/group" <<'EOF'
root:x:0:
www-data:x:33:
nogroup:x:65534:
nobody:x:65534:
EOF
printf 'passwd: files\ngroup: files\nhosts: files\nservices: files\nprotocols: files\n' > "$R/etc/nsswitch.conf"
printf '127.0.0.1 localhost\n::1 localhost\n' > "$R/etc/hosts"
for f in /etc/protocols /etc/services /etc/ssl/openssl.cnf; do
  if [ -f "$f" ]; then put "$f" "$f"; fi
done
mkdir -p "$R/usr/lib/ssl"
ln -s /etc/ssl/openssl.cnf "$R/usr/lib/ssl/openssl.cnf"
if [ -d /etc/iproute2 ]; then cp -a /etc/iproute2 "$R/etc/"; fi

# The kernel's modules, the init and the test.
mkdir -p "$R/usr/lib/modules"
cp -a "$KDIR/lib/modules/$KVER" "$R/usr/lib/modules/"
install -m 0755 scripts/vm/init "$R/init"
install -m 0755 scripts/vm/guest-test.sh "$R/vm/guest-test.sh"
install -m 0644 tests/support/node_server.py "$R/vm/node_server.py"

# Uncompressed: unpacking is a copy, and decompressing under TCG is slow.
(cd "$R" && find . -print0 | cpio --null -o -H newc -R 0:0 --quiet) > "$WORK/initrd.cpio"
echo "vm-test: initramfs $(du -m "$WORK/initrd.cpio" | cut -f1) MB, built in $(since "$T_BUILD") s; kernel $KVER"

# --- 5. Boot it ---------------------------------------------------------------
say "booting the VM (qemu TCG, ${VM_SMP} CPUs, 1 GiB, limit ${VM_TIMEOUT} s)"
LOG=$WORK/console.log
T_VM=$(date +%s%N)
: > "$LOG"
# In the background with its pid kept, so an interrupted run stops it too;
# `tail --pid` shows the console as it comes and ends with qemu.
timeout -k 10 "$VM_TIMEOUT" "$QEMU" -accel tcg -cpu max -smp "$VM_SMP" -m 1024 \
  -nographic -no-reboot -nic none \
  -kernel "$KDIR/vmlinuz" -initrd "$WORK/initrd.cpio" \
  -append "console=ttyS0 panic=-1 quiet loglevel=3 random.trust_cpu=on vmtest.verbose=${VM_VERBOSE:-0}" \
  < /dev/null > "$LOG" 2>&1 &
QEMU_PID=$!
tail -n +1 -s 0.2 --pid="$QEMU_PID" -f "$LOG" &
TAIL_PID=$!
qemu_rc=0
wait "$QEMU_PID" || qemu_rc=$?
QEMU_PID=""
wait "$TAIL_PID" || true
TAIL_PID=""
vm_s=$(since "$T_VM")

result=$(tr -d '\r' < "$LOG" | sed -n 's/^GATEWAY-VM-RESULT: exit status \([0-9][0-9]*\)$/\1/p' | tail -n 1)
echo
if [ -z "$result" ]; then
  if [ "$qemu_rc" -eq 124 ] || [ "$qemu_rc" -eq 137 ]; then
    die "the VM did not finish within VM_TIMEOUT=${VM_TIMEOUT} s (no result line on its console; output above)"
  fi
  die "the VM stopped without reporting a result (qemu exit status $qemu_rc; console output above)"
fi
echo "vm-test: VM ran ${vm_s} s, whole script $(since "$T0") s"
if [ "$result" -ne 0 ]; then
  # The lines that say what failed, again: a CI log shows only its end.
  tr -d '\r' < "$LOG" | grep -E '\] FAIL: |^guest-test: line [0-9]+: ' | sed 's/^/vm-test: /' | cut -c1-2000 >&2 || true
  printf '\nvm-test: FAILED: the guest test failed (exit status %s; its output is above)\n' "$result" >&2
  exit "$result"
fi
echo "vm-test: kernel WireGuard backend passed in the VM"
