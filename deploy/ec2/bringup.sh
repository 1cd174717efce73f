#!/usr/bin/env bash
# Brings up Tidewater on an EC2 instance with two instance-store NVMe devices
# (i4i.8xlarge, i7i.8xlarge and the like): one device for the journal, one for the
# ledger, the service account, the binary, the units, host tuning, and the service.
#
#   deploy/ec2/bringup.sh --binary ./tidewater [--dry-run] [--cores LIST] [--fs ext4|xfs]
#                         [--advertised-host HOST] [--journal-device DEV --ledger-device DEV]
#
# Run from an unpacked release (the binary beside this repository's deploy/ and
# tuning/ directories), as root. Idempotent: devices already carrying the
# tw-journal/tw-ledger labels are not formatted again, mounted ones are not
# remounted, existing lines and an existing config are kept. --dry-run prints every
# command and file it would change and changes nothing.
#
# Instance store is erased when the instance stops, hibernates or terminates (not on
# reboot): run this again after a stop/start. Tidewater does not replicate yet, so
# the log on these devices is lost with them.
set -euo pipefail

SRC=$(cd "$(dirname "$0")/../.." && pwd)
DRY_RUN=0
BINARY=""
CORES=""
FS=ext4
ADVERTISED_HOST=""
JOURNAL_DEVICE=""
LEDGER_DEVICE=""
# Where instance-store devices are looked up; tests point it at fake devices.
BY_ID_DIR=${TIDEWATER_BY_ID_DIR:-/dev/disk/by-id}

JOURNAL_MNT=/mnt/tidewater-journal
LEDGER_MNT=/mnt/tidewater-ledger
CONFIG=/etc/tidewater/tidewater.toml

usage() { sed -n '2,/^set -e/{/^set -e/d;s/^# \{0,1\}//;p;}' "$0"; exit "${1:-2}"; }
die() { echo "bringup: $*" >&2; exit 1; }
say() { echo "bringup: $*"; }

while (($#)); do
  case $1 in
    --dry-run) DRY_RUN=1 ;;
    --binary) BINARY=${2:?}; shift ;;
    --cores) CORES=${2:?}; shift ;;
    --fs) FS=${2:?}; shift ;;
    --advertised-host) ADVERTISED_HOST=${2:?}; shift ;;
    --journal-device) JOURNAL_DEVICE=${2:?}; shift ;;
    --ledger-device) LEDGER_DEVICE=${2:?}; shift ;;
    -h|--help) usage 0 ;;
    *) echo "bringup: unknown argument $1" >&2; usage ;;
  esac
  shift
done
[[ $FS == ext4 || $FS == xfs ]] || die "--fs must be ext4 or xfs"
[[ -n $BINARY ]] || die "--binary PATH: the tidewater binary to install"
if ((!DRY_RUN)); then
  [[ $(id -u) == 0 ]] || die "run as root (or look first with --dry-run)"
  [[ -x $BINARY ]] || die "$BINARY is not an executable"
fi

# Runs a command that changes the machine, or prints it under --dry-run.
run() {
  if ((DRY_RUN)); then
    printf '+'; printf ' %q' "$@"; printf '\n'
  else
    "$@"
  fi
}

# Writes stdin to a file when its content differs (mode, then path).
put_file() {
  local mode=$1 path=$2 content
  content=$(cat)
  if [[ -f $path ]] && [[ $(cat "$path") == "$content" ]]; then
    say "$path is up to date"
    return
  fi
  if ((DRY_RUN)); then
    say "would write $path (mode $mode):"
    printf '    %s\n' "${content//$'\n'/$'\n'    }"
    return
  fi
  mkdir -p "$(dirname "$path")"
  printf '%s\n' "$content" >"$path.tmp"
  chmod "$mode" "$path.tmp"
  mv -f "$path.tmp" "$path"
  say "wrote $path"
}

# --- the devices --------------------------------------------------------------------

# Instance-store NVMe devices, by their model name: the EBS volumes (the root disk
# among them) are "Amazon Elastic Block Store" and never match.
instance_store_devices() {
  local link dev
  local -A seen=()
  for link in "$BY_ID_DIR"/nvme-Amazon_EC2_NVMe_Instance_Storage_*; do
    [[ -e $link ]] || continue
    [[ $link == *-part* ]] && continue
    dev=$(readlink -f "$link")
    [[ -n ${seen[$dev]:-} ]] && continue # the same namespace under two names
    seen[$dev]=1
    echo "$dev"
  done | sort -V
}

# The whole disk holding /, so it can never be picked even if a name lies.
root_disk() {
  local src parent
  src=$(findmnt -n -o SOURCE / 2>/dev/null || true)
  [[ $src == /dev/* ]] || return 0
  echo "$src"
  parent=$(lsblk -n -d -o PKNAME "$src" 2>/dev/null || true)
  [[ -z $parent ]] || echo "/dev/$parent"
}

label_of() { blkid -p -o value -s LABEL "$1" 2>/dev/null || true; }
fstype_of() { blkid -p -o value -s TYPE "$1" 2>/dev/null || true; }

if [[ -z $JOURNAL_DEVICE || -z $LEDGER_DEVICE ]]; then
  mapfile -t candidates < <(instance_store_devices)
  if ((${#candidates[@]} == 0)) && command -v nvme >/dev/null 2>&1 && [[ $BY_ID_DIR == /dev/disk/by-id ]]; then
    # No udev by-id links (a minimal image): ask the controllers.
    mapfile -t candidates < <(nvme list 2>/dev/null | awk '/Amazon EC2 NVMe Instance Storage/ {print $1}' | sort -V)
  fi
  mapfile -t roots < <(root_disk)
  devices=()
  for dev in "${candidates[@]}"; do
    for r in "${roots[@]}"; do [[ $dev == "$r" ]] && continue 2; done
    devices+=("$dev")
  done
  say "instance-store NVMe devices: ${devices[*]:-none}"
  # Labels decide roles, so a second run (or a reboot that renamed the devices)
  # finds each role on the device that already has it.
  for dev in "${devices[@]}"; do
    case $(label_of "$dev") in
      tw-journal) JOURNAL_DEVICE=${JOURNAL_DEVICE:-$dev} ;;
      tw-ledger) LEDGER_DEVICE=${LEDGER_DEVICE:-$dev} ;;
    esac
  done
  for dev in "${devices[@]}"; do
    [[ $dev == "$JOURNAL_DEVICE" || $dev == "$LEDGER_DEVICE" ]] && continue
    [[ -n $(label_of "$dev") || -n $(fstype_of "$dev") ]] && continue # someone else's
    if [[ -z $JOURNAL_DEVICE ]]; then JOURNAL_DEVICE=$dev
    elif [[ -z $LEDGER_DEVICE ]]; then LEDGER_DEVICE=$dev
    fi
  done
  if ((${#devices[@]} > 2)); then
    say "more than two instance-store devices: using $JOURNAL_DEVICE and $LEDGER_DEVICE, leaving the others alone"
  fi
fi
[[ -n $JOURNAL_DEVICE && -n $LEDGER_DEVICE ]] ||
  die "need two empty instance-store NVMe devices (or --journal-device and --ledger-device); found: ${devices[*]:-none}"
[[ $JOURNAL_DEVICE != "$LEDGER_DEVICE" ]] || die "journal and ledger need separate devices"
say "journal device $JOURNAL_DEVICE, ledger device $LEDGER_DEVICE"

# ext4 by default: the filesystem Tidewater's benchmarks and crash tests ran on. Its
# known weakness, O_DIRECT appends to one file from many threads, does not arise:
# every file has one writer core and the journal files are preallocated, so their
# writes never allocate. xfs (what Redpanda and ScyllaDB recommend for their shared
# files) works too: --fs xfs.
#   ext4 -E lazy_*_init=0: initialize inode tables and the fs journal now, not in a
#     background thread competing with the first hours of traffic.
#   -m 0: no root-reserved blocks; the service does not run as root.
#   -T largefile: one inode per MiB; segments are 32-128 MiB, so millions of inodes
#     are still spare and mkfs has less to write.
format_device() {
  local dev=$1 label=$2 have
  have=$(label_of "$dev")
  if [[ $have == "$label" ]]; then
    say "$dev already carries $label ($(fstype_of "$dev")): not formatting"
    return
  fi
  if [[ -n $have || -n $(fstype_of "$dev") ]]; then
    die "$dev holds a filesystem ($(fstype_of "$dev"), label '${have}') that is not $label: refusing to format it"
  fi
  case $FS in
    ext4) run mkfs.ext4 -q -L "$label" -m 0 -T largefile -E lazy_itable_init=0,lazy_journal_init=0 "$dev" ;;
    xfs) run mkfs.xfs -q -L "$label" "$dev" ;;
  esac
}

# noatime: a read must not turn into an inode write (nodiratime is implied; it is
# spelled out for readers who look for it). nofail: a dead instance-store device
# must not stop the boot in emergency mode and lock us out; tidewater.service's
# RequiresMountsFor= keeps the service down instead. No online `discard`: trims go
# through the weekly fstrim.timer, not in the write path.
MOUNT_OPTS=defaults,noatime,nodiratime,nofail

mount_device() {
  local label=$1 mnt=$2 dev=$3 src
  if ! grep -Eq "^[^#]*[[:space:]]${mnt}[[:space:]]" /etc/fstab 2>/dev/null; then
    if ((DRY_RUN)); then
      say "would add to /etc/fstab: LABEL=$label $mnt $FS $MOUNT_OPTS 0 2"
    else
      cp -p /etc/fstab "/etc/fstab.before-tidewater.$(date +%s)"
      printf 'LABEL=%s %s %s %s 0 2\n' "$label" "$mnt" "$FS" "$MOUNT_OPTS" >>/etc/fstab
      say "added $mnt to /etc/fstab"
    fi
  else
    say "/etc/fstab already mounts $mnt"
  fi
  if src=$(findmnt -n -o SOURCE --mountpoint "$mnt" 2>/dev/null); then
    [[ $(readlink -f "$src") == "$(readlink -f "$dev")" ]] ||
      die "$mnt is mounted from $src, not $dev"
    say "$mnt is mounted"
  else
    run mkdir -p "$mnt"
    # An immutable mount point: if the device is ever missing, writes into the
    # directory fail instead of filling the root disk.
    run chattr +i "$mnt" || say "cannot make $mnt immutable; continuing"
    run systemctl daemon-reload # regenerate mount units from fstab
    run mount "$mnt"
  fi
  run chown tidewater:tidewater "$mnt"
  run chmod 0750 "$mnt"
}

# --- the CPUs -----------------------------------------------------------------------

# All online CPUs but core 0's hardware threads (left to the kernel, sshd, journald),
# unless that leaves fewer than two. Prints a list like 1-7,9-15.
default_cores() {
  local online siblings
  online=$(cat /sys/devices/system/cpu/online)
  siblings=$(cat /sys/devices/system/cpu/cpu0/topology/thread_siblings_list 2>/dev/null || echo 0)
  python3 - "$online" "$siblings" <<'EOF'
import sys
def expand(s):
    out = set()
    for part in s.split(","):
        a, _, b = part.partition("-")
        out.update(range(int(a), int(b or a) + 1))
    return out
online, siblings = expand(sys.argv[1]), expand(sys.argv[2])
cores = sorted(online - siblings) if len(online - siblings) >= 2 else sorted(online)
ranges, start = [], None
for i, c in enumerate(cores):
    if start is None:
        start = c
    if i + 1 == len(cores) or cores[i + 1] != c + 1:
        ranges.append(str(start) if start == c else "%d-%d" % (start, c))
        start = None
print(",".join(ranges))
EOF
}
CORES=${CORES:-$(default_cores)}
say "Tidewater CPUs: $CORES"

# Partition p lives on core p % cores: a count that does not divide the partitions
# leaves some cores with more work than others.
check_spread() {
  local config=$1
  [[ -f $config ]] || config=$SRC/deploy/production.toml
  python3 - "$CORES" "$config" <<'EOF'
import re, sys
n = 0
for part in sys.argv[1].split(","):
    a, _, b = part.partition("-")
    n += int(b or a) - int(a) + 1
for count in re.findall(r"^partitions\s*=\s*(\d+)", open(sys.argv[2]).read(), re.M):
    if int(count) % n:
        print("bringup: WARNING: %s partitions over %d cores: %d cores own one more "
              "partition than the rest; consider --cores with a count dividing %s"
              % (count, n, int(count) % n, count))
EOF
}
check_spread "$CONFIG"

# --- the rest ---------------------------------------------------------------------------

advertised_host() {
  [[ -n $ADVERTISED_HOST ]] && { echo "$ADVERTISED_HOST"; return; }
  if ((DRY_RUN)); then
    echo "<this instance's private DNS name, from the instance metadata service>"
    return
  fi
  local token
  token=$(curl -fsS -m 2 -X PUT http://169.254.169.254/latest/api/token \
    -H 'X-aws-ec2-metadata-token-ttl-seconds: 60') ||
    die "no instance metadata (IMDSv2); pass --advertised-host"
  curl -fsS -m 2 -H "X-aws-ec2-metadata-token: $token" \
    http://169.254.169.254/latest/meta-data/local-hostname
}

say "== service account"
if id tidewater >/dev/null 2>&1; then
  say "user tidewater exists"
elif command -v systemd-sysusers >/dev/null 2>&1; then
  run install -D -m 0644 "$SRC/deploy/sysusers.d/tidewater.conf" /usr/lib/sysusers.d/tidewater.conf
  run systemd-sysusers /usr/lib/sysusers.d/tidewater.conf
else
  run useradd --system --user-group --home-dir /var/lib/tidewater --shell /usr/sbin/nologin \
    --comment "Tidewater event processor" tidewater
fi

say "== devices"
format_device "$JOURNAL_DEVICE" tw-journal
format_device "$LEDGER_DEVICE" tw-ledger
mount_device tw-journal "$JOURNAL_MNT" "$JOURNAL_DEVICE"
mount_device tw-ledger "$LEDGER_MNT" "$LEDGER_DEVICE"
run systemctl enable --now fstrim.timer

say "== binary, tuner, units, config"
# Replaced by rename, so a running server keeps its old binary until it restarts.
if ! cmp -s "$BINARY" /usr/local/bin/tidewater; then
  run install -m 0755 "$BINARY" /usr/local/bin/tidewater.new
  run mv -f /usr/local/bin/tidewater.new /usr/local/bin/tidewater
fi
run install -D -m 0755 "$SRC/tuning/tidewater-tune" /usr/local/sbin/tidewater-tune
run install -m 0644 "$SRC/deploy/tidewater.service" "$SRC/deploy/tidewater-tune.service" /etc/systemd/system/
put_file 0644 /etc/systemd/system/tidewater.service.d/cpus.conf <<EOF
# Written by bringup.sh for this machine. Must match tidewater-tune --cores
# (/etc/default/tidewater-tune); the empty line resets the unit's default set.
[Service]
CPUAffinity=
CPUAffinity=${CORES//,/ }
EOF
disk_names="$(basename "$JOURNAL_DEVICE") $(basename "$LEDGER_DEVICE")"
put_file 0644 /etc/default/tidewater-tune <<EOF
# Read by tidewater-tune.service at every boot. Written by bringup.sh.
TIDEWATER_CORES=$CORES
TIDEWATER_NIC_ARGS=
TIDEWATER_DISK_ARGS=--disks $disk_names
EOF
if [[ -f $CONFIG ]]; then
  say "$CONFIG exists: kept as it is"
else
  host=$(advertised_host)
  put_file 0640 "$CONFIG" < <(sed "s|^advertised_addr = \"[^:]*:|advertised_addr = \"$host:|" "$SRC/deploy/production.toml")
  run chgrp tidewater "$CONFIG"
fi

say "== TLS certificate and the first user"
# A CA of this host's own and a server certificate for the advertised name (and
# localhost, for the tools on this host), unless the operator put theirs in place;
# clients trust ca.pem (docs/security.md: replacing it with your own CA's).
TLS_DIR=/etc/tidewater/tls
if [[ -f $TLS_DIR/server.pem ]]; then
  say "$TLS_DIR/server.pem exists: kept as it is"
else
  host=$(advertised_host)
  if [[ $host =~ ^[0-9.]+$ || $host == *:* ]]; then san="IP:$host"; else san="DNS:$host"; fi
  run install -d -m 0750 -g tidewater "$TLS_DIR"
  run openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/ca.key" -out "$TLS_DIR/ca.pem" -subj "/CN=Tidewater CA $host" -days 3650
  run openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
    -keyout "$TLS_DIR/server.key" -out "$TLS_DIR/server.csr" -subj "/CN=$host"
  put_file 0644 "$TLS_DIR/server.ext" <<EOF
subjectAltName=$san,DNS:localhost,IP:127.0.0.1
extendedKeyUsage=serverAuth
EOF
  run openssl x509 -req -in "$TLS_DIR/server.csr" -CA "$TLS_DIR/ca.pem" -CAkey "$TLS_DIR/ca.key" \
    -CAcreateserial -out "$TLS_DIR/server.pem" -days 825 -extfile "$TLS_DIR/server.ext"
  run chmod 0600 "$TLS_DIR/ca.key"
  run chgrp tidewater "$TLS_DIR/server.key"
  run chmod 0640 "$TLS_DIR/server.key"
fi
# The super user (super_users in the config), once, in the config's data_dir, as
# the service's user (the service must read users.json) and while the service is
# stopped (it holds the data directory). The password is kept only once the user
# exists: /etc/tidewater/admin.password, and admin.properties for Kafka's tools.
data_dir=$(sed -n 's/^data_dir = "\(.*\)"/\1/p' "$CONFIG" 2>/dev/null || true)
data_dir=${data_dir:-/var/lib/tidewater}
if [[ -f $data_dir/users.json ]]; then
  say "$data_dir/users.json exists: its users are kept"
elif systemctl is-active --quiet tidewater.service; then
  say "WARNING: tidewater.service runs without users in $data_dir: add the super user by hand (docs/security.md, SASL)"
elif ((DRY_RUN)); then
  say "would add user admin in $data_dir with a random password, kept in /etc/tidewater/admin.password and admin.properties (mode 0600)"
else
  install -d -m 0750 -o tidewater -g tidewater "$data_dir"
  password=$(openssl rand -hex 24)
  printf '%s\n' "$password" | runuser -u tidewater -- /usr/local/bin/tidewater users add admin \
    --mechanism SCRAM-SHA-512 --password-stdin --config "$CONFIG"
  (umask 077 && printf '%s\n' "$password" > /etc/tidewater/admin.password)
  (umask 077 && cat > /etc/tidewater/admin.properties) <<EOF
# kafka-acls.sh / kafka-configs.sh --bootstrap-server localhost:9092 --command-config /etc/tidewater/admin.properties
security.protocol=SASL_SSL
sasl.mechanism=SCRAM-SHA-512
sasl.jaas.config=org.apache.kafka.common.security.scram.ScramLoginModule required username="admin" password="$password";
ssl.truststore.type=PEM
ssl.truststore.location=$TLS_DIR/ca.pem
EOF
  say "user admin added; its password is in /etc/tidewater/admin.password"
fi

say "== host tuning"
# irqbalance would move the NIC IRQs back within minutes.
if systemctl is-enabled irqbalance.service >/dev/null 2>&1 || systemctl is-active irqbalance.service >/dev/null 2>&1; then
  run systemctl disable --now irqbalance.service
fi
tune_args=(all --cores "$CORES" --disks "$(basename "$JOURNAL_DEVICE")" "$(basename "$LEDGER_DEVICE")")
if ((DRY_RUN)); then
  # What the tuner would change on this host, as it stands now.
  "$SRC/tuning/tidewater-tune" --dry-run "${tune_args[@]}" || true
else
  /usr/local/sbin/tidewater-tune "${tune_args[@]}" || say "WARNING: some tuning failed (above); the service starts anyway"
fi

say "== services"
run systemctl daemon-reload
run systemctl enable tidewater-tune.service
run systemctl enable --now tidewater.service
if ((!DRY_RUN)); then
  sleep 2
  systemctl --no-pager --lines=20 status tidewater.service || die "tidewater.service is not running: journalctl -u tidewater"
fi
if ((DRY_RUN)); then say "done (dry run: nothing changed)"; else say "done"; fi
