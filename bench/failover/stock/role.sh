#!/usr/bin/env bash
# The stock setup's role script, run inside a gateway's namespace: what keepalived's notify
# scripts and /usr/share/doc/conntrackd/examples/sync/primary-backup.sh do, with FRR's role
# route-maps flipped by vtysh instead of a VRRP address.
#
#   role.sh classic DIR NS TOR UP     once, at setup: FRR as such a script expects it: the
#                                     default-originate (to TOR) and the NAT pool (to UP)
#                                     through role route-maps IGW-ROLE-FABRIC/-UPSTREAM that
#                                     the script edits (igw's rendered config instead points
#                                     them at one pre-built map per prepend count)
#   role.sh primary DIR NS            become active: conntrackd -c -f -R -B, then no prepend
#   role.sh backup  DIR NS            become standby: prepend 3, conntrackd -t -n
#   role.sh watch   DIR NS PEER [S]   the standby's keepalive: ping PEER (sync link) every
#                                     100 ms; 3 misses in a row -> primary. Gives up after S
#                                     seconds (default 120): every loop here is bounded.
#
# DIR holds conntrackd.conf; each step is logged with a timestamp to DIR/role.log.
set -uo pipefail
what=$1 DIR=$2 NS=$3
CT="conntrackd -C $DIR/conntrackd.conf"
ASN=65010
log() { echo "$(date +%s.%N) $*" >> "$DIR/role.log"; }

prepend() { # $1 = number of prepends (0 = none)
  local set="" i
  for ((i = 0; i < $1; i++)); do set="$set $ASN"; done
  local args=(-c "configure terminal")
  for rm in "IGW-ROLE-FABRIC permit 10" "IGW-ROLE-UPSTREAM permit 10" "IGW-ROLE-UPSTREAM permit 20"; do
    args+=(-c "route-map $rm" -c "no set as-path prepend")
    [ "$1" -gt 0 ] && args+=(-c "set as-path prepend$set")
    args+=(-c "exit")
  done
  # FRR applies an edited route-map to default-originate and outbound updates only when
  # told to resend (seen with FRR 8.4): hence the soft clear.
  vtysh -N "$NS" "${args[@]}" -c "end" -c "clear bgp * soft out" 2>&1 | grep -v vtysh.conf >> "$DIR/role.log"
}

case "$what" in
  classic)
    TOR=$4 UP=$5 POOL=198.51.100.10/32
    vtysh -N "$NS" -c "configure terminal" \
      -c "route-map IGW-ROLE-FABRIC permit 10" -c "exit" \
      -c "route-map IGW-ROLE-UPSTREAM permit 10" -c "match ip address prefix-list IGW-NAT-POOL" -c "exit" \
      -c "route-map IGW-ROLE-UPSTREAM permit 20" -c "match ipv6 address prefix-list IGW-NAT-POOL6" -c "exit" \
      -c "router bgp $ASN" -c "address-family ipv4 unicast" \
      -c "no network $POOL" -c "network $POOL" \
      -c "neighbor $TOR default-originate route-map IGW-ROLE-FABRIC" \
      -c "neighbor $UP route-map IGW-ROLE-UPSTREAM out" \
      -c "end" -c "clear bgp * soft out" 2>&1 | grep -v vtysh.conf >> "$DIR/role.log"
    log "classic role route-maps in place (default-originate to $TOR, pool to $UP)"
    ;;
  primary)
    log "primary: begin"
    $CT -c >> "$DIR/role.log" 2>&1 || log "conntrackd -c failed"
    log "primary: external cache committed"
    $CT -f >> "$DIR/role.log" 2>&1 || log "conntrackd -f failed"
    $CT -R >> "$DIR/role.log" 2>&1 || log "conntrackd -R failed"
    $CT -B >> "$DIR/role.log" 2>&1 || log "conntrackd -B failed"
    prepend 0
    echo active > "$DIR/role"
    log "primary: done"
    ;;
  backup)
    log "backup: begin"
    prepend 3
    $CT -t >> "$DIR/role.log" 2>&1 || log "conntrackd -t failed"
    $CT -n >> "$DIR/role.log" 2>&1 || log "conntrackd -n failed"
    echo standby > "$DIR/role"
    log "backup: done"
    ;;
  watch)
    PEER=$4 LIMIT=${5:-120}
    log "watch: $PEER"
    misses=0
    end=$((SECONDS + LIMIT))
    while [ $SECONDS -lt $end ]; do
      if ping -n -q -c 1 -W 0.1 "$PEER" > /dev/null 2>&1; then
        misses=0
        sleep 0.1
      else
        misses=$((misses + 1))
        if [ $misses -ge 3 ]; then
          log "watch: peer $PEER lost (3 missed keepalives)"
          exec "$0" primary "$DIR" "$NS"
        fi
      fi
    done
    log "watch: gave up after ${LIMIT}s"
    ;;
  *) echo "usage: role.sh classic|primary|backup|watch DIR NS [TOR UP | PEER [S]]" >&2; exit 2 ;;
esac
