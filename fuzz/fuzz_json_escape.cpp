/*
 * Strings from clients written into the API's JSON: the output must parse
 * as a JSON string whatever the bytes, give back well-formed UTF-8 as it
 * was, and be exactly as long as announced.
 */

#include "fuzz_check.h"
#include "fuzz_json.h"

#include <nlohmann/json.hpp>

#include <cstdint>
#include <string>
#include <string_view>


using rate_limit_fuzz::is_utf8;
using rate_limit_fuzz::require;


extern "C" int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const size_t announced = ngx_http_rate_limit_json_escape_len(data, size);
    require(announced <= 6 * size, "at most 6 bytes out for each byte in");

    /* one byte more, so that writing past the announced length is seen */
    std::string out(announced + 1, '\xee');
    const size_t written = ngx_http_rate_limit_json_escape(
                               data, size,
                               reinterpret_cast<unsigned char *>(out.data()));
    require(written == announced, "the length is announced right");
    require(out[announced] == '\xee', "nothing is written past it");
    out.resize(written);

    for (unsigned char c : out) {
        require(c >= 0x20 && c != 0x7f, "no control character is left");
    }
    require(out.find("\xe2\x80\xa8") == std::string::npos
            && out.find("\xe2\x80\xa9") == std::string::npos,
            "U+2028 and U+2029 are escaped for JavaScript");

    nlohmann::json parsed;
    try {
        parsed = nlohmann::json::parse("\"" + out + "\"");

    } catch (const nlohmann::json::parse_error &) {
        require(false, "the output is a valid JSON string");
    }

    const std::string in(reinterpret_cast<const char *>(data), size);
    require(!is_utf8(in) || parsed.get<std::string>() == in,
            "well-formed UTF-8 comes back as it was");

    return 0;
}
