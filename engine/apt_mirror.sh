# apt_mirror: the Debian mirror this machine's apt uses for its main archive
# (CAFFE_APT_MIRROR overrides it); apt_source_download: a Debian source
# package through it. Sourced by engine/build_caffe.sh, engine/build_pycaffe.sh
# and scripts/debian_base.sh.
apt_mirror() {
  if [ -n "${CAFFE_APT_MIRROR:-}" ]; then echo "$CAFFE_APT_MIRROR"; return; fi
  apt-cache policy 2>/dev/null | awk '
    /^ *[0-9]+ (http|https|file):/ { uri = $2; next }
    /release / && /o=Debian,/ && /l=Debian,/ && /c=main/ && uri != "" { print uri; exit }
  '
}

# apt_source_download PACKAGE=VERSION SUITE DEST: downloads a Debian source
# package's files (apt-get source --download-only, which checks them against
# the signed Release file) into the folder DEST, through a temporary deb-src
# list for SUITE on apt_mirror's mirror; this machine's apt lists stay as
# they are. Returns non-zero, saying why on stderr, when it cannot.
apt_source_download() {
  local spec="$1" suite="$2" dest="$3" mirror
  mirror=$(apt_mirror)
  if [ -z "$mirror" ]; then
    echo "could not find a Debian mirror in this machine's apt configuration; set CAFFE_APT_MIRROR=<uri>" >&2
    return 1
  fi
  echo "fetching the source of $spec from $mirror ($suite)" >&2
  mkdir -p "$dest/lists/partial"
  echo "deb-src [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] $mirror $suite main" > "$dest/sources.list"
  local aptopts=(-o "Dir::Etc::SourceList=$dest/sources.list" -o "Dir::Etc::SourceParts=/dev/null"
                 -o "Dir::State::Lists=$dest/lists" -o "APT::Sandbox::User=root" -q)
  apt-get "${aptopts[@]}" update >&2 || { echo "apt-get update for the $suite deb-src list failed (mirror $mirror)" >&2; return 1; }
  (cd "$dest" && apt-get "${aptopts[@]}" source --download-only "$spec" >&2) \
    || { echo "apt-get source $spec failed (mirror $mirror, suite $suite)" >&2; return 1; }
  rm -rf "$dest/lists" "$dest/sources.list"
}
