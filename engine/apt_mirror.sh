# apt_mirror: the Debian mirror this machine's apt uses for its main archive
# (CAFFE_APT_MIRROR overrides it). Sourced by engine/build_caffe.sh and
# scripts/debian_base.sh.
apt_mirror() {
  if [ -n "${CAFFE_APT_MIRROR:-}" ]; then echo "$CAFFE_APT_MIRROR"; return; fi
  apt-cache policy 2>/dev/null | awk '
    /^ *[0-9]+ (http|https|file):/ { uri = $2; next }
    /release / && /o=Debian,/ && /l=Debian,/ && /c=main/ && uri != "" { print uri; exit }
  '
}
