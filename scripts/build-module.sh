#!/usr/bin/env bash
# Builds the dynamic module the way Debian builds its own nginx modules:
# nginx's configure with the exact conf_flags of /usr/sbin/nginx, then
# "make modules".  The nginx source is copied so nothing outside the build
# folder is written.
set -euo pipefail

nginx_src=$1 build_dir=$2 module_dir=$3 output=$4

mkdir -p "$build_dir"
src_copy="$build_dir/src"
stamp="$build_dir/configured"

# configure again whenever the add-on script or the list of sources changes
sources=$(ls "$module_dir"/config "$module_dir"/*.c "$module_dir"/../core/src/*.cpp)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$sources" ] \
    || [ "$module_dir/config" -nt "$stamp" ]; then
    rm -rf "$src_copy" && cp -r "$nginx_src" "$src_copy"
    (
        cd "$src_copy"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure \
            --with-cc-opt="-g -O2 -fPIC -fstack-protector-strong ${RATE_LIMIT_CC_OPT:-}" \
            --with-ld-opt="-fPIC ${RATE_LIMIT_LD_OPT:-}" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$module_dir" \
            --builddir="$build_dir/objs" >"$build_dir/configure.log" 2>&1 \
            || { cat "$build_dir/configure.log"; exit 1; }
    )
    printf '%s' "$sources" >"$stamp"
fi

# a make of its own: CMake's jobserver does not reach through this script
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -s -j"$(nproc)" -f "$build_dir/objs/Makefile" -C "$src_copy" modules
cp "$build_dir/objs/ngx_http_rate_limit_module.so" "$output"
