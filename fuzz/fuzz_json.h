/*
 * What the fuzz targets that read JSON share.
 */

#ifndef RATE_LIMIT_FUZZ_JSON_H
#define RATE_LIMIT_FUZZ_JSON_H

#include <nlohmann/json.hpp>

#include <string>


namespace rate_limit_fuzz {

inline bool is_utf8(const std::string &text)
{
    try {
        /* dump() refuses a string that is not well-formed UTF-8 */
        (void) nlohmann::json(text).dump();
        return true;

    } catch (const nlohmann::json::type_error &) {
        return false;
    }
}

}  // namespace rate_limit_fuzz


#endif /* RATE_LIMIT_FUZZ_JSON_H */
