#!/usr/bin/env bash
# Build the language profiles' local images from Debian packages (mmdebstrap + docker import; no registry is
# needed); images already present are kept. With no arguments every profile is built, one after another.
#   scripts/profile-images.sh              all profiles
#   scripts/profile-images.sh python c     just these
#   scripts/profile-images.sh --force java rebuild even if present
# Needs mmdebstrap (scripts/setup.sh --dev installs it) and a settings file via $HATCHWAY_CONFIG if profiles are
# configured there.
set -euo pipefail
cd "$(dirname "$0")/.."
exec .venv/bin/hatchway profiles build "$@"
