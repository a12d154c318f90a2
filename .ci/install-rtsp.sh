#!/usr/bin/env bash
# Install the test servers (Debian/Ubuntu apt packages): the GStreamer RTSP server stack used by
# tests/rtsp_server.py, the Mosquitto MQTT broker tests/test_mqtt.py starts on loopback, and the
# headless browser (chromium + chromedriver, with a font) tests/test_web.py drives.
# Idempotent: does nothing when the packages are already present. Needs root or password-less sudo.
# The server script runs with the distribution's /usr/bin/python3 (its `gi` is not in a venv).
# Where nothing can be installed (no apt-get, no root) it warns and exits 0, and the RTSP tests skip
# themselves with the reason; set SARDE_REQUIRE_RTSP=1 (CI) to make that an error instead.
set -euo pipefail

PKGS=(
  gir1.2-gst-rtsp-server-1.0
  python3-gi
  gstreamer1.0-plugins-base
  gstreamer1.0-plugins-good
  gstreamer1.0-plugins-bad
  gstreamer1.0-plugins-ugly
  gstreamer1.0-libav
  gstreamer1.0-tools
  mosquitto
  chromium
  chromium-driver
  fonts-dejavu-core
)

give_up() {
  echo "install-rtsp: $1; the RTSP tests will be skipped" >&2
  if [ "${SARDE_REQUIRE_RTSP:-0}" = "1" ]; then exit 1; fi
  exit 0
}

command -v dpkg-query >/dev/null 2>&1 || give_up "not a Debian/Ubuntu system (no dpkg-query)"

missing=()
for p in "${PKGS[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if [ "${#missing[@]}" -eq 0 ]; then
  echo "install-rtsp: all packages present"
else
  SUDO=""
  if [ "$(id -u)" -ne 0 ]; then
    if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
      give_up "missing ${missing[*]} and no root or password-less sudo"
    fi
  fi
  echo "install-rtsp: installing ${missing[*]}"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}"
fi

if ! /usr/bin/python3 -c "import gi; gi.require_version('Gst', '1.0'); gi.require_version('GstRtspServer', '1.0'); from gi.repository import Gst, GstRtspServer" 2>/dev/null; then
  give_up "/usr/bin/python3 cannot import GstRtspServer"
fi
echo "install-rtsp: GstRtspServer OK"
