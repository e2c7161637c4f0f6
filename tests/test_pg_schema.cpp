/*
 * The module sends the schema from the core; people read it in
 * config/rate_limit_schema.sql.  The two must say the same.
 */

#include <ngx_http_rate_limit_core.h>

#include <gtest/gtest.h>

#include <fstream>
#include <sstream>
#include <string>


TEST(PgSchema, ShippedFileIsWhatTheModuleSends)
{
    std::ifstream file(RATE_LIMIT_SCHEMA_FILE, std::ios::binary);
    ASSERT_TRUE(file) << "cannot open " << RATE_LIMIT_SCHEMA_FILE;

    std::ostringstream shipped;
    shipped << file.rdbuf();

    size_t len = 0;
    const char *sent = ngx_http_rate_limit_pg_schema(&len);

    EXPECT_EQ(shipped.str(), std::string(sent, len));
}


TEST(PgSchema, CreatesTheTableTheSyncReads)
{
    size_t len = 0;
    const char *sent = ngx_http_rate_limit_pg_schema(&len);
    std::string sql(sent, len);

    for (const char *needle : {"CREATE TABLE IF NOT EXISTS rate_limit_buckets",
                               "rate_limit_bucket_deletions",
                               "pg_notify('rate_limit_buckets'",
                               "pg_advisory_xact_lock"})
    {
        EXPECT_NE(sql.find(needle), std::string::npos) << needle;
    }
}
