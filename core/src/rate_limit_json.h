/*
 * The JSON text helpers that the bucket API shares with the C entry points
 * of rate_limit_json.cpp.
 */

#ifndef _NGX_HTTP_RATE_LIMIT_JSON_H_INCLUDED_
#define _NGX_HTTP_RATE_LIMIT_JSON_H_INCLUDED_


#include <cstddef>
#include <string>
#include <string_view>


namespace ngx_http_rate_limit {

/* well-formed UTF-8 without NUL bytes: what PostgreSQL stores as text */
bool is_text(std::string_view s) noexcept;

/*
 * s as a quoted JSON string, any bytes: invalid UTF-8 as \u00XX, U+2028
 * and U+2029 escaped, as ngx_http_rate_limit_json_escape() writes them.
 */
void append_json_string(std::string &out, std::string_view s);

}  // namespace ngx_http_rate_limit


#endif /* _NGX_HTTP_RATE_LIMIT_JSON_H_INCLUDED_ */
