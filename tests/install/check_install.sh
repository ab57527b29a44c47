#!/usr/bin/env bash
# check_install.sh BUILD_DIR SCRATCH SOURCE_DIR
set -euo pipefail
build=$1 scratch=$2 source=$3
rm -rf "$scratch"
mkdir -p "$scratch"
prefix=$scratch/prefix
cmake --install "$build" --prefix "$prefix" >/dev/null

# 1. pkg-config, shared library
PKG_CONFIG_PATH=$prefix/lib/pkgconfig:$prefix/lib/x86_64-linux-gnu/pkgconfig
export PKG_CONFIG_PATH
${CC:-cc} -std=c11 -Wall -Wextra -Wpedantic -Werror "$source/consumer.c" \
  $(pkg-config --cflags --libs softndk) -o "$scratch/consumer-pkgconfig"
LD_LIBRARY_PATH=$prefix/lib:$prefix/lib/x86_64-linux-gnu "$scratch/consumer-pkgconfig"

# 2. find_package(SoftNDK), static library
mkdir -p "$scratch/cmake-consumer"
cat > "$scratch/cmake-consumer/CMakeLists.txt" <<CMAKE
cmake_minimum_required(VERSION 3.25)
project(consumer C CXX)
find_package(SoftNDK REQUIRED)
add_executable(consumer $source/consumer.c)
set_property(TARGET consumer PROPERTY LINKER_LANGUAGE CXX)
target_link_libraries(consumer PRIVATE SoftNDK::softndk_static)
CMAKE
cmake -S "$scratch/cmake-consumer" -B "$scratch/cmake-consumer/build" \
  -DCMAKE_PREFIX_PATH="$prefix" >/dev/null
cmake --build "$scratch/cmake-consumer/build" >/dev/null
"$scratch/cmake-consumer/build/consumer"
