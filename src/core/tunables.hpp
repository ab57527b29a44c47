// Every knob of SoftNDK, declared once in tunables.cpp with its default and help text.
// A value comes from SoftNdkSetTunable, else from the environment (SOFTNDK_<NAME>),
// else from the default. Adapters read them when they open.
#pragma once

#include <cstdint>
#include <optional>
#include <string>

namespace softndk::tunables {

struct Tunable {
  const char* name;
  const char* default_value;
  const char* help;
  // Accepts or rejects a value; numeric tunables are unsigned integers.
  bool (*valid)(const std::string& value);
};

// The table, in declaration order.
const Tunable* begin();
const Tunable* end();
const Tunable* find(const std::string& name);

std::string get(const Tunable& tunable);
std::optional<std::string> get(const std::string& name);
bool set(const std::string& name, const std::string& value);  // false: unknown/invalid
void reset();

uint64_t number(const char* name);  // for numeric tunables; aborts on a typo in our code
// The NDK_ADAPTER_FLAG_* bits the withheld_capabilities tunable names.
uint32_t withheld_capabilities();

}  // namespace softndk::tunables
