#!/usr/bin/env bash
# Builds the dynamic module the way Debian builds its own nginx modules:
# nginx's configure with the exact conf_flags of /usr/sbin/nginx, then
# "make modules".  The nginx source is copied so nothing outside the build
# folder is written.  nginx compiles only ngx_module/; the C++ core comes
# built, as the static library CORE_LIB (CMake's rate_limit_core), which
# ngx_module/config reads from RATE_LIMIT_CORE_LIB.
#
#   build-module.sh NGINX_SRC BUILD_DIR MODULE_DIR OUTPUT CORE_LIB
#   RATE_LIMIT_CC_OPT, RATE_LIMIT_LD_OPT  more compiler and linker flags
set -euo pipefail

[ "$#" -eq 5 ] || {
    echo "usage: $0 NGINX_SRC BUILD_DIR MODULE_DIR OUTPUT CORE_LIB" >&2
    exit 2
}
nginx_src=$1 build_dir=$2 module_dir=$3 output=$4
core_lib=$(realpath -e "$5") || {
    echo "build-module: no core library at '$5'" >&2
    exit 1
}
export RATE_LIMIT_CORE_LIB=$core_lib
cc_opt="-g -O2 -fPIC -fstack-protector-strong ${RATE_LIMIT_CC_OPT:-}"
ld_opt="-fPIC ${RATE_LIMIT_LD_OPT:-}"

mkdir -p "$build_dir"
src_copy="$build_dir/src"
stamp="$build_dir/configured"

# configure again whenever the add-on script, the list of sources, the
# library's path or the flags change: configure writes them all into the
# Makefile
configuration=$(ls "$module_dir"/config "$module_dir"/*.c
                 printf '%s\n' "$core_lib" "$cc_opt" "$ld_opt")
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$configuration" ] \
    || [ "$module_dir/config" -nt "$stamp" ]; then
    rm -rf "$src_copy" && cp -r "$nginx_src" "$src_copy"
    (
        cd "$src_copy"
        # shellcheck disable=SC1091
        . ./conf_flags
        ./configure \
            --with-cc-opt="$cc_opt" \
            --with-ld-opt="$ld_opt" \
            "${NGX_CONF_FLAGS[@]}" \
            --add-dynamic-module="$module_dir" \
            --builddir="$build_dir/objs" >"$build_dir/configure.log" 2>&1 \
            || { cat "$build_dir/configure.log"; exit 1; }
    )
    printf '%s' "$configuration" >"$stamp"
fi

# nginx's Makefile links the module from its objects alone: a newer core
# library must relink it
so=$build_dir/objs/ngx_http_rate_limit_module.so
if [ -f "$so" ] && [ "$core_lib" -nt "$so" ]; then
    rm -f "$so"
fi

# a make of its own: CMake's jobserver does not reach through this script
env -u MAKEFLAGS -u MFLAGS -u MAKELEVEL \
    make -s -j"$(nproc)" -f "$build_dir/objs/Makefile" -C "$src_copy" modules
cp "$build_dir/objs/ngx_http_rate_limit_module.so" "$output"
