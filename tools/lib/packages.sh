# Sourced by the tools: ensure_packages WHO PKG... installs the Debian packages of the list
# that are missing (as root, or with sudo), trying `apt-get update` once if the first install
# fails. Returns non-zero, with a message naming WHO, when apt-get cannot install them.
ensure_packages() {
  local who=$1 p sudo=
  shift
  local missing=()
  for p in "$@"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  ((${#missing[@]})) || return 0
  echo "$who: installing ${missing[*]}"
  [ "$(id -u)" = 0 ] || sudo=sudo
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null ||
    { DEBIAN_FRONTEND=noninteractive $sudo apt-get update -q >/dev/null &&
      DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -q "${missing[@]}" >/dev/null; } ||
    { echo "$who: apt-get could not install ${missing[*]}" >&2; return 1; }
}
