/*
 * The policy file: per-client limits in YAML, read with libyaml's event
 * API, and the order in which the sources of a client's limit win.
 *
 * Why events rather than libyaml's document API: the file may hold a
 * hundred thousand clients, and a document tree would hold every scalar
 * twice over; events also let the reader stop at the first node that does
 * not fit the schema.  That is also what bounds the nesting: the schema is
 * at most five mappings deep (root, zones, zone, clients, client), and a
 * collection anywhere a scalar belongs is refused on its start event, so
 * libyaml never parses further into an input nested ten thousand deep.
 *
 * Why so strict (no aliases, no numbers in quotes, no unknown fields): the
 * file grants and denies traffic, and a misspelt "brust" silently ignored
 * would be worse than an nginx that refuses to start.
 */

#include <ngx_http_rate_limit_core.h>

#include "rate_limit_error.h"

using ngx_http_rate_limit::write_error;

#include <yaml.h>

#include <algorithm>
#include <cerrno>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <memory>
#include <new>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <unordered_map>
#include <utility>
#include <vector>

#include <sys/stat.h>


namespace {

struct PolicyEntry {
    size_t                       zone_index;
    std::string                  key;
    ngx_http_rate_limit_rate_t   rate;
    uint64_t                     burst;
    size_t                       line;
    size_t                       column;
};

} // namespace


/* the opaque handle of the header */
/* a place in the file, 1-based, as editors count */
struct PolicyPosition {
    size_t  line;
    size_t  column;
};


struct ngx_http_rate_limit_policy_s {
    std::vector<std::string>  zones;
    std::vector<PolicyPosition>     zone_positions;
    std::vector<PolicyEntry>  entries;
};


namespace {

PolicyPosition position_of(const yaml_mark_t &mark) noexcept
{
    return PolicyPosition { mark.line + 1, mark.column + 1 };
}


/* the file does not say what it should at a known place */
class PolicyError : public std::runtime_error {
public:
    PolicyError(PolicyPosition at, const std::string &message)
        : std::runtime_error(message), at_(at)
    {}

    PolicyPosition at() const noexcept { return at_; }

private:
    PolicyPosition  at_;
};


/* the file cannot be read at all: no place in it to point at */
class FileError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};


/*
 * Text from the file, fit for a one-line message of bounded size: control
 * characters become '?' and a long text is cut at a character boundary.
 */
std::string quoted(std::string_view text)
{
    constexpr size_t shown_max = 40;

    size_t shown = text.size();
    if (shown > shown_max) {
        shown = shown_max;
        /* back off UTF-8 continuation bytes so no character is halved */
        while (shown > 0
               && (static_cast<unsigned char>(text[shown]) & 0xc0) == 0x80)
        {
            shown--;
        }
    }

    std::string result = "\"";
    for (char c : text.substr(0, shown)) {
        const unsigned char byte = static_cast<unsigned char>(c);
        result += byte < 0x20 || byte == 0x7f ? '?' : c;
    }
    result += shown < text.size() ? "...\"" : "\"";
    return result;
}


std::string read_file(const char *path)
{
    struct FileCloser {
        void operator()(std::FILE *file) const noexcept { std::fclose(file); }
    };

    const std::unique_ptr<std::FILE, FileCloser> file(std::fopen(path, "rb"));
    if (!file) {
        throw FileError(std::string("cannot open: ") + std::strerror(errno));
    }

    constexpr size_t max_size = NGX_HTTP_RATE_LIMIT_POLICY_MAX_SIZE;
    const std::string too_large = "the file is larger than "
                                  + std::to_string(max_size >> 20)
                                  + " MiB, the most a policy may be";

    /* refused before reading when the size is known up front */
    struct stat info {};
    if (fstat(fileno(file.get()), &info) == 0 && S_ISREG(info.st_mode)
        && static_cast<uint64_t>(info.st_size) > max_size)
    {
        throw FileError(too_large);
    }

    /* and counted while reading, as a file may grow or be a pipe */
    std::string text;
    char chunk[65536];

    for ( ;; ) {
        const size_t got = std::fread(chunk, 1, sizeof(chunk), file.get());
        if (got == 0) {
            break;
        }
        if (text.size() + got > max_size) {
            throw FileError(too_large);
        }
        text.append(chunk, got);
    }

    if (std::ferror(file.get())) {
        throw FileError(std::string("cannot read: ") + std::strerror(errno));
    }

    return text;
}


/*
 * The position of a byte offset, for libyaml's reader errors, which come
 * with an offset only.  Columns count characters, as libyaml's marks do.
 */
PolicyPosition position_at_offset(std::string_view text, size_t offset) noexcept
{
    offset = std::min(offset, text.size());

    PolicyPosition at { 1, 1 };
    for (size_t i = 0; i < offset; i++) {
        const unsigned char byte = static_cast<unsigned char>(text[i]);
        if (byte == '\n') {
            at.line++;
            at.column = 1;
        } else if ((byte & 0xc0) != 0x80) {
            at.column++;
        }
    }
    return at;
}


/* libyaml's parser, one event at a time; the current event stays valid
 * until the next call */
class YamlEvents {
public:
    explicit YamlEvents(std::string_view text) : text_(text)
    {
        if (!yaml_parser_initialize(&parser_)) {
            throw std::bad_alloc();
        }
        yaml_parser_set_input_string(
            &parser_, reinterpret_cast<const unsigned char *>(text.data()),
            text.size());
    }

    YamlEvents(const YamlEvents &) = delete;
    YamlEvents &operator=(const YamlEvents &) = delete;

    ~YamlEvents()
    {
        release_event();
        yaml_parser_delete(&parser_);
    }

    const yaml_event_t &next()
    {
        release_event();

        if (!yaml_parser_parse(&parser_, &event_)) {
            throw syntax_error();
        }
        has_event_ = true;

        /* an alias can repeat a subtree without bound ("billion laughs") */
        if (event_.type == YAML_ALIAS_EVENT) {
            throw PolicyError(position_of(event_.start_mark),
                              "aliases (*name) are not supported here");
        }

        return event_;
    }

private:
    void release_event() noexcept
    {
        if (has_event_) {
            yaml_event_delete(&event_);
            has_event_ = false;
        }
    }

    PolicyError syntax_error() const
    {
        if (parser_.error == YAML_MEMORY_ERROR) {
            throw std::bad_alloc();
        }

        const std::string problem = parser_.problem != nullptr
                                    ? parser_.problem : "unknown problem";

        if (parser_.error == YAML_READER_ERROR) {
            /* libyaml reads bytes here, and only knows their offset */
            std::string message = "not valid UTF-8 or UTF-16: " + problem;
            if (parser_.problem_value != -1) {
                char value[32];
                std::snprintf(value, sizeof(value), " (0x%x)",
                              static_cast<unsigned>(parser_.problem_value));
                message += value;
            }
            return PolicyError(position_at_offset(text_,
                                                  parser_.problem_offset),
                               message);
        }

        std::string message = "YAML syntax error: " + problem;
        if (parser_.context != nullptr) {
            message += std::string(" ") + parser_.context;
        }
        return PolicyError(position_of(parser_.problem_mark), message);
    }

    std::string_view  text_;
    yaml_parser_t     parser_ {};
    yaml_event_t      event_ {};
    bool              has_event_ = false;
};


bool is_scalar(const yaml_event_t &event) noexcept
{
    return event.type == YAML_SCALAR_EVENT;
}

std::string scalar_text(const yaml_event_t &event)
{
    return std::string(reinterpret_cast<const char *>(
                           event.data.scalar.value),
                       event.data.scalar.length);
}

/* what a user writes for "nothing": an empty plain scalar, such as "a:" */
bool is_empty_plain(const yaml_event_t &event) noexcept
{
    return is_scalar(event) && event.data.scalar.length == 0
           && event.data.scalar.style == YAML_PLAIN_SCALAR_STYLE;
}


/*
 * Digits only, written plain and untagged: "20" in quotes or !!str 20 is a
 * string in YAML, and 0x14, 2e1, 20.0 or 1_000 are refused rather than
 * guessed at.
 */
std::optional<uint64_t> burst_value(const yaml_event_t &event) noexcept
{
    if (!is_scalar(event) || event.data.scalar.style != YAML_PLAIN_SCALAR_STYLE
        || !event.data.scalar.plain_implicit
        || event.data.scalar.length == 0)
    {
        return std::nullopt;
    }

    uint64_t value = 0;

    for (size_t i = 0; i < event.data.scalar.length; i++) {
        const unsigned char c = event.data.scalar.value[i];
        if (c < '0' || c > '9') {
            return std::nullopt;
        }
        value = value * 10 + (c - '0');
        if (value > NGX_HTTP_RATE_LIMIT_BURST_MAX) {
            return std::nullopt;
        }
    }

    return value;
}


/*
 * Walks the events in the shape of the schema; each read_ function is
 * called with the start event of its node just consumed, and consumes up
 * to and including the node's end.
 */
class PolicyReader {
public:
    explicit PolicyReader(std::string_view text) : events_(text) {}

    ngx_http_rate_limit_policy_s read()
    {
        expect_stream_start();

        const yaml_event_t &first = events_.next();
        if (first.type == YAML_STREAM_END_EVENT) {
            return std::move(policy_);              /* an empty file */
        }

        /* the only other event after STREAM-START is DOCUMENT-START */
        read_document();

        const yaml_event_t &after = events_.next();
        if (after.type != YAML_STREAM_END_EVENT) {
            throw PolicyError(position_of(after.start_mark),
                              "expected the end of the file: a policy is "
                              "one YAML document");
        }

        sort_entries();
        return std::move(policy_);
    }

private:
    void expect_stream_start()
    {
        const yaml_event_t &event = events_.next();
        if (event.type != YAML_STREAM_START_EVENT) {
            throw PolicyError(position_of(event.start_mark),
                              "expected the start of a YAML stream");
        }
    }

    void read_document()
    {
        const yaml_event_t &root = events_.next();

        if (root.type == YAML_MAPPING_START_EVENT) {
            read_root();
        } else if (!is_empty_plain(root)) {
            /* "---" alone is an empty document, and so an empty policy */
            throw PolicyError(position_of(root.start_mark),
                              "expected a mapping with the key \"zones\"");
        }

        /* a document ends once its root is read */
        events_.next();
    }

    void read_root()
    {
        bool seen_zones = false;

        for ( ;; ) {
            const yaml_event_t &key = events_.next();
            if (key.type == YAML_MAPPING_END_EVENT) {
                return;
            }

            const PolicyPosition at = position_of(key.start_mark);
            const std::string name = key_text(key, "a top-level key");

            if (name != "zones") {
                throw PolicyError(at, "unknown top-level key " + quoted(name)
                                      + ", expected \"zones\"");
            }
            if (seen_zones) {
                throw PolicyError(at, "duplicate key \"zones\"");
            }
            seen_zones = true;

            const yaml_event_t &value = events_.next();
            if (value.type != YAML_MAPPING_START_EVENT) {
                throw PolicyError(position_of(value.start_mark),
                                  "expected a mapping of zone names under "
                                  "\"zones\"");
            }
            read_zones();
        }
    }

    void read_zones()
    {
        std::unordered_map<std::string, size_t> zone_lines;

        for ( ;; ) {
            const yaml_event_t &key = events_.next();
            if (key.type == YAML_MAPPING_END_EVENT) {
                return;
            }

            const PolicyPosition at = position_of(key.start_mark);
            std::string zone = key_text(key, "a zone name");

            if (!ngx_http_rate_limit_valid_zone_name(
                    reinterpret_cast<const unsigned char *>(zone.data()),
                    zone.size()))
            {
                throw PolicyError(at, "invalid zone name " + quoted(zone)
                                      + ", expected 1 to "
                                      + std::to_string(
                                            NGX_HTTP_RATE_LIMIT_ZONE_NAME_MAX)
                                      + " of A-Z a-z 0-9 _ . -");
            }

            const auto [seen, inserted] = zone_lines.emplace(zone, at.line);
            if (!inserted) {
                throw PolicyError(at, "duplicate zone " + quoted(zone)
                                      + ", first at line "
                                      + std::to_string(seen->second));
            }

            const yaml_event_t &value = events_.next();
            if (value.type != YAML_MAPPING_START_EVENT) {
                throw PolicyError(position_of(value.start_mark),
                                  "expected a mapping with the key "
                                  "\"clients\" for zone " + quoted(zone));
            }

            policy_.zones.push_back(std::move(zone));
            policy_.zone_positions.push_back(at);
            read_zone(policy_.zones.size() - 1);
        }
    }

    void read_zone(size_t zone_index)
    {
        bool seen_clients = false;

        for ( ;; ) {
            const yaml_event_t &key = events_.next();
            if (key.type == YAML_MAPPING_END_EVENT) {
                return;
            }

            const PolicyPosition at = position_of(key.start_mark);
            const std::string name = key_text(key, "a zone field");

            if (name != "clients") {
                throw PolicyError(at, "unknown zone field " + quoted(name)
                                      + ", expected \"clients\"");
            }
            if (seen_clients) {
                throw PolicyError(at, "duplicate key \"clients\"");
            }
            seen_clients = true;

            const yaml_event_t &value = events_.next();
            if (value.type != YAML_MAPPING_START_EVENT) {
                throw PolicyError(position_of(value.start_mark),
                                  "expected a mapping of client keys to "
                                  "limits under \"clients\"");
            }
            read_clients(zone_index);
        }
    }

    void read_clients(size_t zone_index)
    {
        std::unordered_map<std::string, size_t> client_lines;

        for ( ;; ) {
            const yaml_event_t &key_event = events_.next();
            if (key_event.type == YAML_MAPPING_END_EVENT) {
                return;
            }

            const PolicyPosition at = position_of(key_event.start_mark);
            std::string key = key_text(key_event, "a client key");

            if (key.empty()) {
                throw PolicyError(at, "expected a client key, not an empty "
                                      "one");
            }

            if (key.size() > NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX) {
                throw PolicyError(at, "client key " + quoted(key) + " is "
                                      + std::to_string(key.size())
                                      + " bytes long, the most is "
                                      + std::to_string(
                                            NGX_HTTP_RATE_LIMIT_ROW_KEY_MAX));
            }

            const auto [seen, inserted] = client_lines.emplace(key, at.line);
            if (!inserted) {
                throw PolicyError(at, "duplicate client " + quoted(key)
                                      + " in zone "
                                      + quoted(policy_.zones[zone_index])
                                      + ", first at line "
                                      + std::to_string(seen->second));
            }

            const yaml_event_t &value = events_.next();
            if (value.type != YAML_MAPPING_START_EVENT) {
                throw PolicyError(position_of(value.start_mark),
                                  "expected a mapping such as "
                                  "{ rate: 10r/s, burst: 20 } for client "
                                  + quoted(key));
            }

            PolicyEntry entry { zone_index, std::move(key), {}, 0, at.line,
                                at.column };
            read_client(entry);
            policy_.entries.push_back(std::move(entry));
        }
    }

    void read_client(PolicyEntry &entry)
    {
        std::optional<ngx_http_rate_limit_rate_t> rate;
        std::optional<uint64_t> burst;
        PolicyPosition rate_at {};
        PolicyPosition burst_at {};

        for ( ;; ) {
            const yaml_event_t &key = events_.next();
            if (key.type == YAML_MAPPING_END_EVENT) {
                break;
            }

            const PolicyPosition at = position_of(key.start_mark);
            const std::string field = key_text(key, "rate or burst");

            if (field != "rate" && field != "burst") {
                throw PolicyError(at, "unknown client field " + quoted(field)
                                      + ", expected rate or burst");
            }
            if ((field == "rate" && rate) || (field == "burst" && burst)) {
                throw PolicyError(at, "duplicate field " + quoted(field)
                                      + " for client " + quoted(entry.key));
            }

            const yaml_event_t &value = events_.next();
            const PolicyPosition value_at = position_of(value.start_mark);

            if (field == "rate") {
                rate = rate_value(value, value_at);
                rate_at = value_at;
            } else {
                burst = burst_value(value);
                if (!burst) {
                    throw PolicyError(value_at,
                                      "expected burst to be a whole number "
                                      "from 0 to "
                                      + std::to_string(
                                          NGX_HTTP_RATE_LIMIT_BURST_MAX));
                }
                burst_at = value_at;
            }
        }

        const PolicyPosition key_at { entry.line, entry.column };

        if (!rate) {
            throw PolicyError(key_at, "expected a rate for client "
                                      + quoted(entry.key)
                                      + ", such as { rate: 10r/s }");
        }

        entry.rate = *rate;
        entry.burst = burst ? *burst : rate->count;

        /* the rate alone passed, so what is left to refuse is the burst */
        char problem[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";
        ngx_http_rate_limit_params_t unused;

        if (ngx_http_rate_limit_make_params_blocking(&entry.rate, entry.burst,
                                                     &unused, problem,
                                                     sizeof(problem))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            throw PolicyError(burst ? burst_at : rate_at, problem);
        }
    }

    ngx_http_rate_limit_rate_t rate_value(const yaml_event_t &value,
        PolicyPosition at)
    {
        if (!is_scalar(value)) {
            throw PolicyError(at, "expected rate to be a text such as 10r/s");
        }

        ngx_http_rate_limit_rate_t rate {};
        char problem[NGX_HTTP_RATE_LIMIT_ERR_LEN] = "";
        const std::string text = scalar_text(value);

        if (ngx_http_rate_limit_parse_rate_allow_zero(
                text.data(), text.size(), &rate, problem, sizeof(problem))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            throw PolicyError(at, "bad rate " + quoted(text) + ": "
                                  + problem);
        }

        /*
         * Burst 0 checks the rate alone, so that a rate the module would
         * refuse (too fast, too slow) is reported at the rate; the module
         * loads nothing it would then fail to use.
         */
        ngx_http_rate_limit_params_t unused;

        if (ngx_http_rate_limit_make_params_blocking(&rate, 0, &unused,
                                                     problem, sizeof(problem))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            throw PolicyError(at, "bad rate " + quoted(text) + ": "
                                  + problem);
        }

        return rate;
    }

    /* a mapping key, which must be text; "what" names what is expected */
    std::string key_text(const yaml_event_t &key, const char *what)
    {
        if (!is_scalar(key)) {
            throw PolicyError(position_of(key.start_mark),
                              std::string("expected ") + what
                              + ", not a collection");
        }
        return scalar_text(key);
    }

    void sort_entries()
    {
        const std::vector<std::string> &zones = policy_.zones;

        /* std::string compares as unsigned char: bytewise, like memcmp */
        std::sort(policy_.entries.begin(), policy_.entries.end(),
                  [&zones](const PolicyEntry &a, const PolicyEntry &b) {
                      const int by_zone =
                          zones[a.zone_index].compare(zones[b.zone_index]);
                      return by_zone != 0 ? by_zone < 0 : a.key < b.key;
                  });
    }

    YamlEvents                    events_;
    ngx_http_rate_limit_policy_s  policy_;
};

} // namespace


extern "C" int
ngx_http_rate_limit_policy_load(const char *path,
    ngx_http_rate_limit_policy_t **policy, char *err, size_t errlen) noexcept
{
    if (path == nullptr || policy == nullptr) {
        write_error(err, errlen, "internal error: no policy file given");
        return NGX_HTTP_RATE_LIMIT_EINVAL;
    }

    try {
        const std::string text = read_file(path);

        auto loaded = std::make_unique<ngx_http_rate_limit_policy_s>(
            PolicyReader(text).read());

        *policy = loaded.release();
        return NGX_HTTP_RATE_LIMIT_OK;

    } catch (const PolicyError &error) {
        write_error(err, errlen, "%s:%zu:%zu: %s", path, error.at().line,
                    error.at().column, error.what());
    } catch (const FileError &error) {
        write_error(err, errlen, "%s: %s", path, error.what());
    } catch (const std::bad_alloc &) {
        write_error(err, errlen, "%s: out of memory", path);
    } catch (...) {
        write_error(err, errlen, "%s: internal error while loading",
                    path);
    }

    return NGX_HTTP_RATE_LIMIT_EINVAL;
}


extern "C" size_t
ngx_http_rate_limit_policy_size(
    const ngx_http_rate_limit_policy_t *policy) noexcept
{
    return policy != nullptr ? policy->entries.size() : 0;
}


extern "C" void
ngx_http_rate_limit_policy_entry(const ngx_http_rate_limit_policy_t *policy,
    size_t i, ngx_http_rate_limit_policy_entry_t *entry) noexcept
{
    if (entry == nullptr) {
        return;
    }

    *entry = ngx_http_rate_limit_policy_entry_t {};

    if (policy == nullptr || i >= policy->entries.size()) {
        return;
    }

    const PolicyEntry &stored = policy->entries[i];
    const std::string &zone = policy->zones[stored.zone_index];

    entry->zone = zone.c_str();
    entry->zone_len = zone.size();
    entry->key = reinterpret_cast<const unsigned char *>(stored.key.c_str());
    entry->key_len = stored.key.size();
    entry->rate = stored.rate;
    entry->burst = stored.burst;
    entry->line = stored.line;
    entry->column = stored.column;
}


extern "C" size_t
ngx_http_rate_limit_policy_zones(const ngx_http_rate_limit_policy_t *policy)
    noexcept
{
    return policy != nullptr ? policy->zones.size() : 0;
}


extern "C" void
ngx_http_rate_limit_policy_zone(const ngx_http_rate_limit_policy_t *policy,
    size_t i, ngx_http_rate_limit_policy_zone_t *zone) noexcept
{
    if (zone == nullptr) {
        return;
    }

    *zone = ngx_http_rate_limit_policy_zone_t {};

    if (policy == nullptr || i >= policy->zones.size()) {
        return;
    }

    zone->name = policy->zones[i].c_str();
    zone->name_len = policy->zones[i].size();
    zone->line = policy->zone_positions[i].line;
    zone->column = policy->zone_positions[i].column;
}


extern "C" void
ngx_http_rate_limit_policy_free(ngx_http_rate_limit_policy_t *policy) noexcept
{
    /* adopted to be destroyed: the handle came from a unique_ptr */
    std::unique_ptr<ngx_http_rate_limit_policy_s> owned(policy);
}


extern "C" const char *
ngx_http_rate_limit_source_name(ngx_http_rate_limit_source_e source) noexcept
{
    switch (source) {
    case NGX_HTTP_RATE_LIMIT_SOURCE_DEFAULT:
        return "default";
    case NGX_HTTP_RATE_LIMIT_SOURCE_YAML:
        return "yaml";
    case NGX_HTTP_RATE_LIMIT_SOURCE_POSTGRES:
        return "postgres";
    }

    /* C can pass any int as the enum */
    return "unknown";
}
