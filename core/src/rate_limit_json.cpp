/*
 * JSON for the bucket API: the request body in, escaped strings out.
 *
 * The body is read with nlohmann::json's SAX interface rather than into a
 * json value: the fields are checked as they arrive, so a body nested a
 * million deep or carrying a huge array is refused at its first misplaced
 * bracket instead of being built first, and a field given twice, which the
 * DOM would silently resolve to its last value, is caught.
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"
#include "rate_limit_json.h"

using ngx_http_rate_limit::write_error;

#include <nlohmann/json.hpp>

#include <array>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <new>
#include <string>
#include <string_view>


namespace {

/*
 * Text for a message that must fit NGX_HTTP_RATE_LIMIT_ERR_LEN: cut short
 * at a character boundary, control characters shown as '?'.
 */
std::string shown_text(std::string_view name, size_t shown_max)
{
    size_t shown = name.size();
    if (shown > shown_max) {
        shown = shown_max;
        while (shown > 0
               && (static_cast<unsigned char>(name[shown]) & 0xc0) == 0x80)
        {
            shown--;
        }
    }

    std::string result;
    for (char c : name.substr(0, shown)) {
        const unsigned char byte = static_cast<unsigned char>(c);
        result += byte < 0x20 || byte == 0x7f ? '?' : c;
    }
    if (shown < name.size()) {
        result += "...";
    }
    return result;
}


/*
 * nlohmann's message without its "[json.exception...] parse error at line
 * 1, column 5: syntax error while parsing value - " preamble (the byte is
 * reported apart) and without the "; last read: '...'" echo of the input,
 * which can be long and holds raw bytes.
 */
std::string parse_problem(const std::string &what)
{
    std::string problem = what;

    const size_t preamble_end = problem.find(" - ");
    if (preamble_end != std::string::npos) {
        problem.erase(0, preamble_end + 3);
    }

    const size_t echo = problem.find("; last read:");
    if (echo != std::string::npos) {
        problem.erase(echo);
    }

    return shown_text(problem, 80);
}


enum class Field { none, key, rate, burst };

using Json = nlohmann::json;


/* takes the body's events; the first problem stops the parse */
class BucketBodyReader final : public nlohmann::json_sax<Json> {
public:
    explicit BucketBodyReader(ngx_http_rate_limit_bucket_body_t &body)
        : body_(body)
    {}

    const std::string &problem() const noexcept { return problem_; }

    bool has_key() const noexcept { return seen_key_; }
    bool has_rate() const noexcept { return seen_rate_; }
    bool has_burst() const noexcept { return seen_burst_; }

    bool null() override { return wrong_type(); }
    bool boolean(bool) override { return wrong_type(); }

    bool number_integer(number_integer_t value) override
    {
        /* only numbers with a minus sign come here; "-0" is still 0 */
        if (value == 0) {
            return number_unsigned(0);
        }
        return wrong_type();
    }

    bool number_unsigned(number_unsigned_t value) override
    {
        if (depth_ != 1 || field_ != Field::burst
            || value > NGX_HTTP_RATE_LIMIT_BURST_MAX)
        {
            return wrong_type();
        }

        body_.burst = value;
        return true;
    }

    bool number_float(number_float_t, const string_t &) override
    {
        return wrong_type();
    }

    bool string(string_t &value) override
    {
        if (depth_ != 1) {
            return wrong_type();
        }

        switch (field_) {
        case Field::key:
            return take_key(value);
        case Field::rate:
            return take_rate(value);
        case Field::burst:
        case Field::none:
            break;
        }

        return wrong_type();
    }

    bool binary(binary_t &) override { return wrong_type(); }

    bool start_object(std::size_t) override
    {
        if (depth_ != 0) {
            return wrong_type();
        }
        depth_ = 1;
        return true;
    }

    bool key(string_t &name) override
    {
        bool *seen = nullptr;

        if (name == "key") {
            field_ = Field::key;
            seen = &seen_key_;
        } else if (name == "rate") {
            field_ = Field::rate;
            seen = &seen_rate_;
        } else if (name == "burst") {
            field_ = Field::burst;
            seen = &seen_burst_;
        } else {
            return fail("unknown field \"" + shown_text(name, 24)
                        + "\", expected key, rate or burst");
        }

        if (*seen) {
            return fail("duplicate field \"" + name + "\"");
        }
        *seen = true;
        return true;
    }

    bool end_object() override
    {
        depth_ = 0;
        field_ = Field::none;
        return true;
    }

    bool start_array(std::size_t) override { return wrong_type(); }

    /* never reached: every array is refused at its start */
    bool end_array() override { return wrong_type(); }

    bool parse_error(std::size_t position, const std::string &,
        const nlohmann::detail::exception &error) override
    {
        /* 1-based, the end of the input being one past the last byte */
        return fail("malformed JSON at byte " + std::to_string(position)
                    + ": " + parse_problem(error.what()));
    }

private:
    bool fail(std::string problem)
    {
        /* the first problem is the one the client must fix first */
        if (problem_.empty()) {
            problem_ = std::move(problem);
        }
        return false;
    }

    /* a value that is not what its place calls for */
    bool wrong_type()
    {
        if (depth_ == 0) {
            return fail("the body must be a JSON object such as "
                        "{\"rate\": \"10r/s\", \"burst\": 20}");
        }

        switch (field_) {
        case Field::key:
            return fail("key must be a non-empty string");
        case Field::rate:
            return fail("rate must be a string such as \"10r/s\"");
        case Field::burst:
        case Field::none:
            break;
        }

        return fail("burst must be a whole number from 0 to "
                    + std::to_string(NGX_HTTP_RATE_LIMIT_BURST_MAX));
    }

    bool take_key(const std::string &key)
    {
        if (key.empty()) {
            return fail("key must be a non-empty string");
        }
        if (key.size() > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
            return fail("key must be at most "
                        + std::to_string(NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX)
                        + " bytes, not " + std::to_string(key.size()));
        }

        std::memcpy(body_.key, key.data(), key.size());
        body_.key_len = key.size();
        return true;
    }

    bool take_rate(const std::string &text)
    {
        char problem[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";

        if (ngx_http_rate_limit_parse_rate_allow_zero(
                text.data(), text.size(), &body_.rate, problem,
                sizeof(problem))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            return fail(std::string("rate: ") + problem);
        }
        return true;
    }

    ngx_http_rate_limit_bucket_body_t  &body_;
    std::string                          problem_;
    int                                  depth_ = 0;
    Field                                field_ = Field::none;
    bool                                 seen_key_ = false;
    bool                                 seen_rate_ = false;
    bool                                 seen_burst_ = false;
};


int parse_bucket_body(std::string_view text, bool require_key,
    ngx_http_rate_limit_bucket_body_t &out, char *err, size_t errlen)
{
    if (text.find_first_not_of(" \t\n\r") == std::string_view::npos) {
        write_error(err, errlen, "empty body, expected a JSON object such "
                    "as {\"rate\": \"10r/s\", \"burst\": 20}");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    /*
     * nlohmann's lexer takes a NUL byte for the end of the input and would
     * ignore whatever follows; JSON allows the byte nowhere (in a string
     * it must be written \u0000), so it is refused here, where it is.
     */
    const size_t nul_at = text.find('\0');
    if (nul_at != std::string_view::npos) {
        write_error(err, errlen, "malformed JSON at byte %zu: a NUL byte",
                    nul_at + 1);
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    /* filled here and copied out only when the whole body is good */
    ngx_http_rate_limit_bucket_body_t body {};
    BucketBodyReader reader(body);

    const bool parsed = Json::sax_parse(text.begin(), text.end(), &reader,
                                        nlohmann::json::input_format_t::json,
                                        true /* strict: nothing after */);
    if (!parsed) {
        write_error(err, errlen, "%s", reader.problem().empty()
                                       ? "malformed JSON"
                                       : reader.problem().c_str());
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (require_key && !reader.has_key()) {
        write_error(err, errlen, "key is required");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (!reader.has_rate()) {
        write_error(err, errlen, "rate is required, such as \"10r/s\"");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    if (!reader.has_burst()) {
        body.burst = body.rate.count;
    }

    /* what the module does next must not fail on what was accepted here */
    ngx_http_rate_limit_params_t params;

    if (ngx_http_rate_limit_make_params_blocking(&body.rate, body.burst,
                                                 &params, err, errlen)
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    out = body;
    return NGX_HTTP_RATE_LIMIT_OK;
}


/*
 * The length of the well-formed UTF-8 sequence at in (Unicode 15, table
 * 3-7), or 0 when the byte there starts none: then it is escaped alone.
 */
size_t utf8_sequence_length(const unsigned char *in, size_t left) noexcept
{
    const unsigned char lead = in[0];

    size_t length;
    unsigned char second_low = 0x80;
    unsigned char second_high = 0xbf;

    if (lead < 0x80) {
        return 1;
    } else if (lead >= 0xc2 && lead <= 0xdf) {
        length = 2;
    } else if (lead >= 0xe0 && lead <= 0xef) {
        length = 3;
        if (lead == 0xe0) {
            second_low = 0xa0;              /* overlong */
        } else if (lead == 0xed) {
            second_high = 0x9f;             /* surrogates */
        }
    } else if (lead >= 0xf0 && lead <= 0xf4) {
        length = 4;
        if (lead == 0xf0) {
            second_low = 0x90;              /* overlong */
        } else if (lead == 0xf4) {
            second_high = 0x8f;             /* beyond U+10FFFF */
        }
    } else {
        return 0;
    }

    if (left < length || in[1] < second_low || in[1] > second_high) {
        return 0;
    }

    for (size_t i = 2; i < length; i++) {
        if (in[i] < 0x80 || in[i] > 0xbf) {
            return 0;
        }
    }

    return length;
}


/* one pass for both the length and the writing, so they cannot differ */
template <typename Sink>
void escape_json(const unsigned char *in, size_t len, Sink &sink) noexcept
{
    static constexpr char hex_digits[] = "0123456789abcdef";

    const auto put_u00 = [&sink](unsigned char byte) {
        const char escaped[6] = { '\\', 'u', '0', '0', hex_digits[byte >> 4],
                                  hex_digits[byte & 0x0f] };
        sink.put(escaped, sizeof(escaped));
    };

    size_t i = 0;

    while (i < len) {
        const unsigned char byte = in[i];

        switch (byte) {
        case '"':  sink.put("\\\"", 2); i++; continue;
        case '\\': sink.put("\\\\", 2); i++; continue;
        case '\b': sink.put("\\b", 2); i++; continue;
        case '\f': sink.put("\\f", 2); i++; continue;
        case '\n': sink.put("\\n", 2); i++; continue;
        case '\r': sink.put("\\r", 2); i++; continue;
        case '\t': sink.put("\\t", 2); i++; continue;
        default:
            break;
        }

        if (byte < 0x20 || byte == 0x7f) {
            put_u00(byte);
            i++;
            continue;
        }

        const size_t length = utf8_sequence_length(in + i, len - i);

        if (length == 0) {
            put_u00(byte);
            i++;
            continue;
        }

        /* line and paragraph separators end a JavaScript string literal */
        if (length == 3 && byte == 0xe2 && in[i + 1] == 0x80
            && (in[i + 2] == 0xa8 || in[i + 2] == 0xa9))
        {
            sink.put(in[i + 2] == 0xa8 ? "\\u2028" : "\\u2029", 6);
            i += 3;
            continue;
        }

        sink.put(reinterpret_cast<const char *>(in + i), length);
        i += length;
    }
}


struct CountingSink {
    size_t  written = 0;

    void put(const char *, size_t len) noexcept { written += len; }
};


struct WritingSink {
    unsigned char  *out;
    size_t          written = 0;

    void put(const char *data, size_t len) noexcept
    {
        std::memcpy(out + written, data, len);
        written += len;
    }
};


/* its string holds room for all it is given: no append can throw */
struct StringSink {
    std::string  &out;

    void put(const char *data, size_t len) { out.append(data, len); }
};

} // namespace


bool
ngx_http_rate_limit::is_text(std::string_view s) noexcept
{
    const auto *in = reinterpret_cast<const unsigned char *>(s.data());

    for (size_t i = 0; i < s.size(); ) {
        const size_t length = utf8_sequence_length(in + i, s.size() - i);

        if (length == 0 || in[i] == '\0') {
            return false;
        }
        i += length;
    }

    return true;
}


void
ngx_http_rate_limit::append_json_string(std::string &out, std::string_view s)
{
    const auto *in = reinterpret_cast<const unsigned char *>(s.data());

    out.reserve(out.size() + ngx_http_rate_limit_json_escape_len(in, s.size())
                + 2);
    out += '"';
    StringSink sink { out };
    escape_json(in, s.size(), sink);
    out += '"';
}


extern "C" int
ngx_http_rate_limit_parse_bucket_body(const char *body, size_t len,
    int require_key, ngx_http_rate_limit_bucket_body_t *out, char *err,
    size_t errlen) noexcept
{
    if (out == nullptr || (body == nullptr && len != 0)) {
        write_error(err, errlen, "internal error: no body to parse");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    try {
        return parse_bucket_body(std::string_view(body, len),
                                 require_key != 0, *out, err, errlen);

    } catch (const std::bad_alloc &) {
        write_error(err, errlen, "out of memory while parsing the body");
    } catch (...) {
        write_error(err, errlen, "internal error while parsing the body");
    }

    return NGX_HTTP_RATE_LIMIT_EINVAL;
}


extern "C" size_t
ngx_http_rate_limit_json_escape_len(const unsigned char *in,
    size_t len) noexcept
{
    if (in == nullptr) {
        return 0;
    }

    CountingSink counter;
    escape_json(in, len, counter);
    return counter.written;
}


extern "C" size_t
ngx_http_rate_limit_json_escape(const unsigned char *in, size_t len,
    unsigned char *out) noexcept
{
    if (in == nullptr || out == nullptr) {
        return 0;
    }

    WritingSink writer { out };
    escape_json(in, len, writer);
    return writer.written;
}
