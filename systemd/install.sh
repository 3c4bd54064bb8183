#!/bin/sh
# Install phalanxd as a systemd service.
#
#   systemd/install.sh [--prefix DIR] [--root DIR] [--python PY] [--no-venv] [--dry-run]
#
# What it does, in order (each step is printed):
#   1. creates a virtualenv at PREFIX (default /opt/phalanx) and pip-installs
#      this checkout into it, so PREFIX/bin/phalanxd and PREFIX/bin/phalanxctl
#      exist (re-running upgrades the package in place);
#   2. installs config/phalanx.toml as /etc/phalanx/phalanx.toml, only if no
#      file is there yet (an operator's config is never overwritten);
#   3. installs systemd/phalanx.service as /etc/systemd/system/phalanx.service
#      with ExecStart pointing at PREFIX/bin/phalanxd (always replaced: local
#      changes belong in `systemctl edit phalanx` drop-ins);
#   4. runs `systemctl daemon-reload` if systemd is running on this host.
# It never enables or starts the service; it prints how to.
#
# --root DIR installs into a staging tree (DIR/etc/..., venv at DIR/PREFIX)
# while the unit still names PREFIX, as a package build would. A virtualenv
# records its own absolute path, so one built under --root keeps pointing
# into DIR: with --root prefer --no-venv and create the venv on the target.
# systemd is never reloaded for a staging tree.
# --no-venv skips step 1 (the venv exists, or is managed some other way).
# --dry-run prints every step and changes nothing.

set -eu

usage() {
    echo "usage: install.sh [--prefix DIR] [--root DIR] [--python PY] [--no-venv] [--dry-run]" >&2
    exit 2
}

die() {
    echo "install.sh: $*" >&2
    exit 2
}

PREFIX=/opt/phalanx
ROOT=
PYTHON=python3
VENV=yes
DRY_RUN=no

while [ $# -gt 0 ]; do
    case $1 in
        --prefix) [ $# -ge 2 ] || usage; PREFIX=$2; shift 2 ;;
        --prefix=*) PREFIX=${1#*=}; shift ;;
        --root) [ $# -ge 2 ] || usage; ROOT=$2; shift 2 ;;
        --root=*) ROOT=${1#*=}; shift ;;
        --python) [ $# -ge 2 ] || usage; PYTHON=$2; shift 2 ;;
        --python=*) PYTHON=${1#*=}; shift ;;
        --no-venv) VENV=no; shift ;;
        --dry-run) DRY_RUN=yes; shift ;;
        -h|--help) sed -n '2,24p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
        *) echo "install.sh: unknown argument: $1" >&2; usage ;;
    esac
done

# PREFIX goes into ExecStart= and a sed replacement: keep it a plain
# absolute path (systemd would need quoting for spaces; sed treats | & \).
case $PREFIX in
    /*) ;;
    *) die "--prefix must be an absolute path: $PREFIX" ;;
esac
case $PREFIX in
    *[!A-Za-z0-9/._+@-]*) die "--prefix may hold only letters, digits and / . _ + @ -: $PREFIX" ;;
esac
PREFIX=${PREFIX%/}
[ -n "$PREFIX" ] || die "--prefix cannot be /"
if [ -n "$ROOT" ]; then
    case $ROOT in
        /*) ;;
        *) die "--root must be an absolute path: $ROOT" ;;
    esac
    ROOT=${ROOT%/}
fi

REPO=$(cd "$(dirname "$0")/.." && pwd)
UNIT_SRC=$REPO/systemd/phalanx.service
CONFIG_SRC=$REPO/config/phalanx.toml
[ -f "$UNIT_SRC" ] || die "missing $UNIT_SRC"
[ -f "$CONFIG_SRC" ] || die "missing $CONFIG_SRC"

VENV_DIR=$ROOT$PREFIX
CONFIG_DIR=$ROOT/etc/phalanx
CONFIG_DEST=$CONFIG_DIR/phalanx.toml
UNIT_DIR=$ROOT/etc/systemd/system
UNIT_DEST=$UNIT_DIR/phalanx.service
EXEC_START="$PREFIX/bin/phalanxd --config /etc/phalanx/phalanx.toml"

# The unit runs with DynamicUser=yes: an unprivileged, throwaway user must
# be able to read the venv, the config and the unit whatever umask we got.
umask 022

# run CMD...: print it, and run it unless --dry-run.
run() {
    if [ "$DRY_RUN" = yes ]; then
        echo "would run: $*"
    else
        echo "run: $*"
        "$@"
    fi
}

[ "$DRY_RUN" = yes ] && echo "dry run: nothing will be changed"

# 1. the virtualenv
if [ "$VENV" = yes ]; then
    if [ -x "$VENV_DIR/bin/python" ]; then
        echo "venv: $VENV_DIR exists; upgrading phalanx in it"
    else
        run "$PYTHON" -m venv "$VENV_DIR"
    fi
    # pip builds a local directory in place (build/, *.egg-info); build from
    # a copy so a root-run install leaves nothing behind in the checkout.
    src=$REPO
    if [ "$DRY_RUN" = no ]; then
        src=$(mktemp -d "${TMPDIR:-/tmp}/phalanx-src.XXXXXX")
        trap 'rm -rf "$src"' EXIT
        for item in pyproject.toml README.md supervisor workers; do
            cp -R "$REPO/$item" "$src/"
        done
    fi
    run "$VENV_DIR/bin/python" -m pip install --quiet --upgrade pip
    run "$VENV_DIR/bin/python" -m pip install --quiet --upgrade "$src"
    if [ "$DRY_RUN" = no ]; then
        rm -rf "$src"
        trap - EXIT
    fi
else
    echo "venv: skipped (--no-venv); the unit expects $PREFIX/bin/phalanxd"
fi

# 2. the config, only if absent
if [ -e "$CONFIG_DEST" ]; then
    echo "config: kept existing $CONFIG_DEST"
else
    run install -d -m 0755 "$CONFIG_DIR"
    run install -m 0644 "$CONFIG_SRC" "$CONFIG_DEST"
fi

# 3. the unit, ExecStart rewritten to this prefix
echo "unit: ExecStart=$EXEC_START"
if [ "$DRY_RUN" = yes ]; then
    echo "would write: $UNIT_DEST (mode 0644)"
else
    run install -d -m 0755 "$UNIT_DIR"
    tmp=$(mktemp "$UNIT_DIR/.phalanx.service.XXXXXX")
    trap 'rm -f "$tmp"' EXIT
    sed "s|^ExecStart=[^ ]*/phalanxd |ExecStart=$PREFIX/bin/phalanxd |" "$UNIT_SRC" >"$tmp"
    grep -q "^ExecStart=$EXEC_START\$" "$tmp" || die "could not rewrite ExecStart in $UNIT_SRC"
    chmod 0644 "$tmp"
    mv -f "$tmp" "$UNIT_DEST"  # atomic: systemd never reads half a unit
    trap - EXIT
    echo "wrote: $UNIT_DEST (mode 0644)"
fi

# 4. tell systemd, if it is running here and this is the live root
if [ -n "$ROOT" ]; then
    echo "systemd: not reloaded (installed under --root $ROOT)"
elif [ -d /run/systemd/system ]; then
    run systemctl daemon-reload
else
    echo "systemd: not running on this host; skipped daemon-reload"
fi

[ "$DRY_RUN" = yes ] && echo "dry run: nothing was changed"
cat <<EOF
done. Next:
  $PREFIX/bin/phalanxd --check-config /etc/phalanx/phalanx.toml
  systemctl enable --now phalanx
  systemctl status phalanx
EOF
