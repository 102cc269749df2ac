#!/usr/bin/env bash
# Starts Debian's nginx (package nginx-core) as a PUT-to-disk server on 127.0.0.1:PORT, the
# baseline `buoy bench` compares against: every PUT body is written under DIR at its URL path.
# Usage: scripts/nginx-put.sh PORT DIR   (stop it with: kill "$(cat DIR/nginx.pid)")
# DIR's parents must be searchable by nginx's worker user (mktemp -d makes a 0700 directory).
# With NGINX_DISCARD=1 every PUT is answered 200 and its body thrown away: what the load
# generator reaches when the server stores nothing.
set -euo pipefail
port="${1:?port}"
dir="$(mkdir -p "${2:?dir}" && cd "$2" && pwd)"
mkdir -p "$dir/data/api/v1/results/by-node" "$dir/data/api/v1/results/global" "$dir/tmp" "$dir/logs"
# Workers may run as another user; they write below data/ and tmp/ only.
chmod -R a+rwX "$dir/data" "$dir/tmp"
cat > "$dir/nginx.conf" <<CONF
worker_processes 2;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  client_max_body_size 0;
  server {
    listen 127.0.0.1:$port reuseport;
    keepalive_requests 1000000;
    location / {
$(if [ "${NGINX_DISCARD:-}" = 1 ]; then echo "      return 200;"; else cat <<LOC
      root $dir/data;
      dav_methods PUT;
      create_full_put_path on;
      dav_access user:rw group:r all:r;
LOC
fi)
    }
  }
}
CONF
nginx -c "$dir/nginx.conf" -e "$dir/logs/error.log"
if [ "${NGINX_DISCARD:-}" = 1 ]; then stores="discards every body"; else stores="writes under $dir/data"; fi
echo "nginx: http://127.0.0.1:$port/ $stores (pid $(cat "$dir/nginx.pid"))"
