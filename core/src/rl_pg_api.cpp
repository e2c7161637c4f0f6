/*
 * The bucket API's queue: one connection a process, made on the first
 * query, and the queries run on it one after another.  Each answer is
 * written through rl_api.h, and a write is applied to this node's store at
 * once; the other nodes hear of it through NOTIFY.  Every answer reaches
 * the host from rl_pg_api_on_posted(), so that none arrives inside a call
 * of the host's.
 */

#include "rl_pg_conn.h"

#include <algorithm>
#include <cstdio>
#include <deque>
#include <memory>
#include <new>
#include <string>
#include <vector>


struct rl_pg_api_op_s {
    const rl_api_plan_t   *plan;
    rl_store_t             store;
    bool                   apply;      /* to store */
    rl_api_alloc_t         alloc;
    rl_api_reply_t        *reply;
    void                 (*done)(void *data);
    void                  *data;
    rl_api_query_t         query;
    bool                   cancelled = false;
};


namespace rl {
namespace pg {
namespace {

using OpPtr = std::unique_ptr<rl_pg_api_op_t>;


class Api final : public Owner {
public:
    Api(const char *conninfo, const rl_pg_adapter_t &adapter)
        : host_(adapter), conn_(host_, *this), conninfo_(conninfo)
    {}

    void run(OpPtr op);
    void cancel(rl_pg_api_op_t *op);
    void on_io(bool readable, bool writable);
    void on_timer();
    void on_posted();

private:
    void ready() override;
    void result(PGresult *res) override;
    void failed(const char *reason) override;

    void next();
    void answer(rl_pg_api_op_t &op, PGresult *res);
    bool rows(rl_pg_api_op_t &op, PGresult *res);
    void apply(const rl_pg_api_op_t &op, uint64_t txid);
    void finish(OpPtr op);
    void refuse(rl_pg_api_op_t &op, rl_api_refusal_e why);

    Host                 host_;
    Conn                 conn_;
    std::string          conninfo_;
    std::deque<OpPtr>    waiting_;
    OpPtr                running_;
    std::deque<OpPtr>    finished_;    /* answered, for on_posted() */
    bool                 posted_ = false;
    bool                 ready_ = false;
    int                  setting_up_ = 0;    /* 1; 2: recovering */
    bool                 setup_failed_ = false;
};


void Api::run(OpPtr op)
{
    waiting_.push_back(std::move(op));

    if (!conn_.open()) {
        ready_ = false;
        conn_.connect(conninfo_.c_str());

    } else {
        next();
    }

    host_.arm(conn_.deadline());
}


void Api::cancel(rl_pg_api_op_t *op)
{
    if (running_.get() == op) {
        /* its results still come, and are dropped */
        op->cancelled = true;
        return;
    }

    for (std::deque<OpPtr> *ops : {&waiting_, &finished_}) {
        for (auto it = ops->begin(); it != ops->end(); ++it) {
            if (it->get() == op) {
                ops->erase(it);
                return;
            }
        }
    }
}


void Api::on_io(bool readable, bool writable)
{
    try {
        conn_.on_io(readable, writable);

    } catch (const std::bad_alloc &) {
        conn_.fail("out of memory");
    }

    host_.arm(conn_.deadline());
}


void Api::on_timer()
{
    host_.fired();

    try {
        conn_.on_time(host_.now());

    } catch (const std::bad_alloc &) {
        conn_.fail("out of memory");
    }

    host_.arm(conn_.deadline());
}


/* one at a time: a callback may cancel another op that is answered */
void Api::on_posted()
{
    posted_ = false;

    while (!finished_.empty()) {
        OpPtr op = std::move(finished_.front());
        finished_.pop_front();
        op->done(op->data);
    }
}


void Api::next()
{
    if (!ready_ || setting_up_ || conn_.busy() || waiting_.empty()
        || running_)
    {
        return;
    }

    running_ = std::move(waiting_.front());
    waiting_.pop_front();

    const rl_api_query_t &query = running_->query;

    /* a failure has answered every op already */
    (void) conn_.send(query.sql, query.nparams, query.params, false);
}


/* the writes wait for the settings and the schema: see rl_api_setup_sql() */
void Api::ready()
{
    ready_ = true;
    setting_up_ = 1;
    setup_failed_ = false;

    (void) conn_.send(rl_api_setup_sql(), 0, nullptr, false);
}


void Api::result(PGresult *res)
{
    if (setting_up_) {
        if (res != nullptr) {
            if (PQresultStatus(res) == PGRES_FATAL_ERROR
                && setting_up_ == 1)
            {
                /* a role that may not create tables may write a table
                 * made */
                host_.log(RL_PG_LOG_ERR, "rate_limit_api: cannot create the "
                          "schema: %s", PQresultErrorMessage(res));
                setup_failed_ = true;
            }
            return;
        }

        if (setting_up_ == 1 && setup_failed_) {
            setting_up_ = 2;
            (void) conn_.send(rl_api_recover_sql(), 0, nullptr, false);
            return;
        }

        setting_up_ = 0;
        next();
        return;
    }

    if (res == nullptr) {
        if (running_) {
            finish(std::move(running_));
        }
        next();
        return;
    }

    if (running_ && !running_->cancelled && running_->reply->status == 0) {
        answer(*running_, res);
    }
}


void Api::answer(rl_pg_api_op_t &op, PGresult *res)
{
    if (PQresultStatus(res) == PGRES_TUPLES_OK) {
        if (!rows(op, res)) {
            op.reply->status = 0;
        }
        return;
    }

    if (rl_api_busy(PQresultErrorField(res, PG_DIAG_SQLSTATE))) {
        refuse(op, RL_API_BUSY);
        return;
    }

    host_.log(RL_PG_LOG_ERR, "rate_limit_api: query failed: %s",
              PQresultErrorMessage(res));

    refuse(op, RL_API_UNAVAILABLE);
}


/* the rows as text, for rl_api.h to read */
bool Api::rows(rl_pg_api_op_t &op, PGresult *res)
{
    int n = PQntuples(res);
    int ncols = std::min(PQnfields(res), 3);
    std::vector<rl_api_row_t> rows(size_t(n) + 1, rl_api_row_t{});

    for (int i = 0; i < n; i++) {
        for (int j = 0; j < ncols; j++) {
            if (!PQgetisnull(res, i, j)) {
                rows[size_t(i)].value[j] = PQgetvalue(res, i, j);
                rows[size_t(i)].len[j] = size_t(PQgetlength(res, i, j));
            }
        }
    }

    if (op.plan->action == RL_API_LIST) {
        return rl_api_listed(op.plan, rows.data(), size_t(n), &op.alloc,
                             op.reply) == RL_API_OK;
    }

    uint64_t txid = 0;

    if (rl_api_written(op.plan, rows.data(), size_t(n), &txid, &op.alloc,
                       op.reply) != RL_API_OK)
    {
        return false;
    }

    if (n > 0) {
        apply(op, txid);
    }

    return true;
}


/* the serving node applies its own write at once */
void Api::apply(const rl_pg_api_op_t &op, uint64_t txid)
{
    if (!op.apply) {
        return;
    }

    const rl_api_plan_t &plan = *op.plan;
    rl_store_limit_t limit;
    char err[NGX_HTTP_RATE_LIMIT_ERR_LEN];

    if (plan.action != RL_API_DELETE) {
        limit.rate = plan.rate;

        if (ngx_http_rate_limit_make_params_blocking(&plan.rate, plan.burst,
                                                     &limit.params, err,
                                                     sizeof(err))
            != NGX_HTTP_RATE_LIMIT_OK)
        {
            return;
        }
    }

    unsigned char encoded[NGX_HTTP_RATE_LIMIT_KEY_MAX];
    size_t len = ngx_http_rate_limit_encode_key(plan.key, plan.key_len,
                                                encoded);
    rl_store_key_t key;
    rl_store_key(&op.store, encoded, len, &key);

    if (rl_store_row_write(&op.store, &key,
                           plan.action == RL_API_DELETE ? nullptr : &limit,
                           txid)
        == RL_STORE_FULL_NEWLY)
    {
        log_store_full(host_, plan.zone, plan.zone_len, &op.store);
    }
}


void Api::refuse(rl_pg_api_op_t &op, rl_api_refusal_e why)
{
    if (rl_api_refuse(why, &op.alloc, op.reply) != RL_API_OK) {
        op.reply->status = 0;
    }
}


/* an op with no reply yet had no answer from PostgreSQL */
void Api::finish(OpPtr op)
{
    if (op->cancelled) {
        return;
    }

    if (op->reply->status == 0) {
        refuse(*op, RL_API_UNAVAILABLE);
    }

    finished_.push_back(std::move(op));

    if (!posted_) {
        posted_ = true;
        host_.post();
    }
}


void Api::failed(const char *reason)
{
    host_.log(RL_PG_LOG_ERR, "rate_limit_api: PostgreSQL is unavailable (%s)",
              reason);

    ready_ = false;
    setting_up_ = 0;

    if (running_) {
        /* a cancelled query's reply lies in a request's freed pool */
        if (!running_->cancelled) {
            running_->reply->status = 0;
        }

        finish(std::move(running_));
    }

    while (!waiting_.empty()) {
        OpPtr op = std::move(waiting_.front());
        waiting_.pop_front();
        finish(std::move(op));
    }
}

}  // namespace
}  // namespace pg
}  // namespace rl


struct rl_pg_api_s {
    rl_pg_api_s(const char *conninfo, const rl_pg_adapter_t &adapter)
        : api(conninfo, adapter)
    {}

    rl::pg::Api  api;
};


rl_pg_api_t *rl_pg_api_create(const char *conninfo,
    const rl_pg_adapter_t *adapter, char *err) noexcept
{
    if (conninfo == nullptr) {
        std::snprintf(err, RL_PG_ERR_LEN, "no connection string");
        return nullptr;
    }

    try {
        return std::make_unique<rl_pg_api_t>(conninfo, *adapter).release();

    } catch (const std::bad_alloc &) {
        std::snprintf(err, RL_PG_ERR_LEN, "out of memory");
        return nullptr;
    }
}


void rl_pg_api_destroy(rl_pg_api_t *api) noexcept
{
    delete api;
}


int rl_pg_api_run(rl_pg_api_t *api, const rl_api_plan_t *plan,
    const rl_store_t *store, const rl_api_alloc_t *a, rl_api_reply_t *reply,
    void (*done)(void *data), void *data, rl_pg_api_op_t **op) noexcept
{
    try {
        auto o = std::make_unique<rl_pg_api_op_t>();

        o->plan = plan;
        o->apply = store != nullptr;
        if (store != nullptr) {
            o->store = *store;
        }
        o->alloc = *a;
        o->reply = reply;
        o->done = done;
        o->data = data;

        reply->status = 0;

        /* the setup is built once, on the first query */
        if (rl_api_setup_sql() == nullptr
            || rl_api_query(plan, a, &o->query) != RL_API_OK)
        {
            return RL_PG_ERROR;
        }

        rl_pg_api_op_t *const started = o.get();
        api->api.run(std::move(o));
        *op = started;
        return RL_PG_OK;

    } catch (const std::bad_alloc &) {
        return RL_PG_ERROR;
    }
}


void rl_pg_api_cancel(rl_pg_api_t *api, rl_pg_api_op_t *op) noexcept
{
    api->api.cancel(op);
}


void rl_pg_api_on_io(rl_pg_api_t *api, int readable, int writable) noexcept
{
    api->api.on_io(readable != 0, writable != 0);
}


void rl_pg_api_on_timer(rl_pg_api_t *api) noexcept
{
    api->api.on_timer();
}


void rl_pg_api_on_posted(rl_pg_api_t *api) noexcept
{
    api->api.on_posted();
}
