/*
 * Decisions in Redis: the script calls (ops) of a request, one for the
 * keys of each slot, batched per pass of the event loop on one server,
 * their replies, timeouts and refunds.
 */

#include "rl_redis_client.h"



namespace rl {
namespace redis {

/* the link that holds a key: the one server, or the master of its slot */
Link *
Client::route(unsigned slot) noexcept
{
    if (map_ == nullptr) {
        return &links_[0];
    }

    unsigned node = map_->slot_node[slot];

    if (node == NGX_HTTP_RATE_LIMIT_CLUSTER_NO_NODE || node >= map_->nnodes) {
        return nullptr;
    }

    return node_links_[node];
}


/*
 * An op of the one server's batch, sent with the others of this pass once
 * the link takes commands: a new connection's ops wait for its AUTH and
 * SELECT, a moving link's for its new connection.
 */
void
Client::hold(Link &link, Op &op) noexcept
{
    if (link.batch_tail) {
        link.batch_tail->batch_next = &op;
    } else {
        link.batch = &op;
    }

    link.batch_tail = &op;
    batch_links_ |= 1u << link.index;

    if (link.ready && !link.moving) {
        post_batches();
    }
}


Op *
Client::op_alloc() noexcept
{
    Op *op = free_ops_;

    if (op) {
        free_ops_ = op->free_next;
        nfree_ops_--;
        *op = Op();
        return op;
    }

    try {
        return std::make_unique<Op>().release();
    } catch (...) {
        return nullptr;
    }
}


void
Client::op_free(Op *op) noexcept
{
    if (destroying_ || nfree_ops_ == kFreeOps) {
        std::unique_ptr<Op> drop(op);
        return;
    }

    op->free_next = free_ops_;
    free_ops_ = op;
    nfree_ops_++;
}


Request *
Client::request_alloc()
{
    Request *r = free_requests_;

    if (r) {
        free_requests_ = r->free_next;
        nfree_requests_--;
        return r;
    }

    requests_.push_back(std::make_unique<Request>());
    requests_.back()->owner = requests_.size() - 1;

    return requests_.back().get();
}


void
Client::request_free(Request *r) noexcept
{
    if (nfree_requests_ == kFreeOps) {
        /* the last takes its place: O(1) */
        size_t at = r->owner;

        requests_[at].swap(requests_.back());
        requests_[at]->owner = at;
        requests_.pop_back();
        return;
    }

    r->ops = nullptr;
    r->nops = 0;
    r->free_next = free_requests_;
    free_requests_ = r;
    nfree_requests_++;
}


void
Client::tq_push(Op *op) noexcept
{
    op->tq_prev = tq_tail_;
    op->tq_next = nullptr;

    if (tq_tail_) {
        tq_tail_->tq_next = op;
    } else {
        tq_head_ = op;
    }

    tq_tail_ = op;
    op->in_tq = true;
}


void
Client::tq_remove(Op *op) noexcept
{
    if (!op->in_tq) {
        return;
    }

    if (op->tq_prev) {
        op->tq_prev->tq_next = op->tq_next;
    } else {
        tq_head_ = op->tq_next;
    }

    if (op->tq_next) {
        op->tq_next->tq_prev = op->tq_prev;
    } else {
        tq_tail_ = op->tq_prev;
    }

    op->tq_prev = op->tq_next = nullptr;
    op->in_tq = false;
}


int
Client::decide(rl_redis_key_t *keys, size_t nkeys, void (*done)(void *),
               void *data, Request **request)
{
    for (size_t i = 0; i < nkeys; i++) {
        keys[i].status = RL_REDIS_KEY_PENDING;
        keys[i].decision = ngx_http_rate_limit_decision_t();
    }

    Request *req = request_alloc();

    try {
        req->ks.resize(nkeys);
    } catch (...) {
        request_free(req);
        throw;
    }

    req->keys = keys;
    req->nkeys = nkeys;
    req->done = done;
    req->data = data;
    req->ops = nullptr;
    req->nops = 0;

    for (size_t i = 0; i < nkeys; i++) {
        KeyState &k = req->ks[i];

        k.op = nullptr;
        k.taken = false;
        k.slot = cluster_ ? ngx_http_rate_limit_cluster_slot(keys[i].key,
                                                             keys[i].key_len)
                          : 0;
    }

    uint64_t deadline = now_ + timeout_ms_ * 1000;

    /* one op for the keys of each slot: a script's keys share a slot */
    for (size_t i = 0; i < nkeys; i++) {
        if (keys[i].status != RL_REDIS_KEY_PENDING || req->ks[i].op) {
            continue;
        }

        Link *link = route(req->ks[i].slot);
        bool probe_now = false;

        if (link == nullptr || !link->open
            || !circuit_allow(link->circuit, &probe_now))
        {
            /* this request's turn to probe: the probe goes, not it */
            if (probe_now) {
                probe(*link);
            }

            if (link && link->circuit && link->circuit->open.load()) {
                watch(*link);
            }

            /* in a cluster, the slot may have a new master already */
            ask_map(kMapMinGapMs);

            keys[i].status = RL_REDIS_KEY_FAILED;
            continue;
        }

        Op *op = op_alloc();

        if (op == nullptr) {
            keys[i].status = RL_REDIS_KEY_FAILED;
            continue;
        }

        op->request = req;
        op->link = link;

        unsigned slot = req->ks[i].slot;

        for (size_t j = i; j < nkeys; j++) {
            KeyState &k = req->ks[j];

            if (keys[j].status == RL_REDIS_KEY_PENDING && k.op == nullptr
                && (!cluster_ || k.slot == slot))
            {
                k.op = op;
                op->nkeys++;
            }
        }

        if (!cluster_) {
            /* a cluster's keys of different slots cannot share a script */
            hold(*link, *op);

        } else if (!evalsha(*op)) {
            for (size_t j = i; j < nkeys; j++) {
                if (req->ks[j].op == op) {
                    req->ks[j].op = nullptr;
                    keys[j].status = RL_REDIS_KEY_FAILED;
                }
            }

            op_free(op);
            continue;
        }

        /* not cancelable: a worker that quits answers its requests first */
        op->deadline_us = deadline;
        tq_push(op);

        op->req_next = req->ops;
        req->ops = op;
        req->nops++;
    }

    if (req->nops == 0) {
        request_free(req);
        return RL_REDIS_ERROR;
    }

    *request = req;

    return RL_REDIS_OK;
}


/* the request went away: its ops' replies, when they come, are dropped */
void
Client::cancel(Request *req)
{
    for (Op *op = req->ops; op; op = op->req_next) {
        op->request = nullptr;
        tq_remove(op);
    }

    request_free(req);
}


/* the names of the op's keys, in the request's order */
void
Client::arg_keys(Link &link, const Op &op)
{
    const Request &req = *op.request;

    for (size_t i = 0; i < req.nkeys; i++) {
        if (req.ks[i].op == &op) {
            const rl_redis_key_t &k = req.keys[i];
            arg(link, reinterpret_cast<const char *>(k.key), k.key_len);
        }
    }
}


/* interval, burst, cost and code of each of the op's keys */
void
Client::arg_values(Link &link, const Op &op)
{
    const Request &req = *op.request;

    for (size_t i = 0; i < req.nkeys; i++) {
        if (req.ks[i].op == &op) {
            const rl_redis_key_t &k = req.keys[i];
            arg(link, k.interval, k.interval_len);
            arg(link, k.burst, k.burst_len);
            arg(link, k.cost, k.cost_len);
            arg(link, k.token_code, k.token_code_len);
        }
    }
}


/*
 * EVALSHA sha n key... (interval burst cost code)... for the op's keys,
 * with the cheaper script when there is one key
 */
bool
Client::evalsha(Op &op)
{
    Link &link = *op.link;

    /* sent again (NOSCRIPT) on a link that moves: on its new connection;
     * a cluster's ops never go to a name's link, its masters are numeric */
    if (link.moving) {
        hold(link, op);
        return true;
    }

    Expect e;
    e.kind = Expect_kind::op;
    e.ops = &op;

    bool sent = queue(link, 3 + 5 * op.nkeys, std::move(e), [&] {
        arg(link, "EVALSHA", 7);
        arg(link, op.nkeys == 1 ? ngx_http_rate_limit_script_one_sha1()
                                : ngx_http_rate_limit_script_sha1(),
            NGX_HTTP_RATE_LIMIT_SHA1_HEX);
        arg(link, uint64_t{op.nkeys});

        /* all the keys, then the values of each */
        arg_keys(link, op);
        arg_values(link, op);
    });

    if (!sent) {
        return false;
    }

    op.sent_us = now_;
    link.asked_us = now_;

    return true;
}


/*
 * Sends the ops gathered in one pass of the event loop: one alone as it
 * is, several in one call of the batch script, so that Redis runs one
 * script for them all.
 */
void
Client::flush(Link &link)
{
    Op *ops = nullptr;
    Op **last = &ops;
    size_t nops = 0;
    size_t nkeys = 0;

    /* the ops of requests that went away meanwhile are dropped */
    for (Op *op = link.batch, *next; op; op = next) {
        next = op->batch_next;
        op->batch_next = nullptr;

        if (op->request == nullptr) {
            op_free(op);
            continue;
        }

        *last = op;
        last = &op->batch_next;
        nops++;
        nkeys += op->nkeys;
    }

    link.batch = link.batch_tail = nullptr;

    if (nops == 1) {
        if (!evalsha(*ops)) {
            fail(*ops);
            op_free(ops);
        }

        return;
    }

    if (nops == 0) {
        return;
    }

    if (link.open && link.ready) {
        size_t at = link.out.mark();

        try {
            begin(link);
            header(link, 4 + nkeys + nops + 4 * nkeys);
            arg(link, "EVALSHA", 7);
            arg(link, ngx_http_rate_limit_batch_script_sha1(),
                NGX_HTTP_RATE_LIMIT_SHA1_HEX);
            arg(link, uint64_t{nkeys});

            for (Op *op = ops; op; op = op->batch_next) {
                arg_keys(link, *op);
            }

            arg(link, uint64_t{nops});

            for (Op *op = ops; op; op = op->batch_next) {
                op->sent_us = now_;
                arg(link, uint64_t{op->nkeys});
                arg_values(link, *op);
            }

            Expect e;
            e.kind = Expect_kind::batch;
            e.ops = ops;
            commit(link, std::move(e));
            link.asked_us = now_;
            return;

        } catch (...) {
            link.out.truncate(at);
        }
    }

    for (Op *op = ops, *next; op; op = next) {
        next = op->batch_next;

        if (op->request) {
            fail(*op);
        }

        op_free(op);
    }
}


void
Client::on_posted()
{
    posted_ = false;

    uint32_t links = batch_links_;

    while (links) {
        unsigned i = static_cast<unsigned>(__builtin_ctz(links));
        Link &link = links_[i];

        links &= links - 1;

        if (link.batch == nullptr) {
            batch_links_ &= ~(1u << i);
            continue;
        }

        /* a new connection's ops wait for its AUTH and SELECT, a moving
         * link's for its new connection */
        if (link.open && (!link.ready || link.moving)) {
            continue;
        }

        batch_links_ &= ~(1u << i);
        flush(link);
    }
}


void
Client::op_reply(Link &link, Op *op, const redisReply *reply)
{
    if (op->request == nullptr || destroying_) {
        /* the request timed out or went away: its late reply is dropped */
        op_free(op);
        return;
    }

    if (reply == nullptr) {
        fail(*op);
        op_free(op);
        return;
    }

    if (reply->type == REDIS_REPLY_ERROR) {

        /* the script cache was emptied: a restart, a failover, a flush */
        if (!op->reloaded && is_noscript(reply->str)) {
            op->reloaded = true;

            load_script(link, "SCRIPT LOAD again");

            if (evalsha(*op)) {
                return;
            }
        }

        if (map_ && redirect(*op, reply)) {
            return;
        }

        failure(link, false, reply->str);

        fail(*op);
        op_free(op);
        return;
    }

    answer(*op, link, reply);
}


/* the script's answer for a live op: the op is over, and freed */
void
Client::answer(Op &op, Link &link, const redisReply *reply)
{
    if (!parse(op, reply)) {
        failure(link, false, "unexpected reply to EVALSHA");
        fail(op);

    } else {
        circuit_success(link.circuit);
        latency(now_ - op.sent_us);
        over(op);
    }

    op_free(&op);
}


void
Client::batch_reply(Link &link, Op *ops, const redisReply *reply)
{
    size_t at = 0;

    for (Op *op = ops; op; op = op->batch_next) {
        at += 1 + 4 * op->nkeys;
    }

    if (reply && reply->type == REDIS_REPLY_ARRAY && reply->elements == at
        && !destroying_)
    {
        at = 0;

        for (Op *op = ops, *next; op; op = next) {
            next = op->batch_next;

            redisReply part = *reply;
            part.elements = 1 + 4 * op->nkeys;
            part.element = reply->element + at;
            at += part.elements;

            if (op->request == nullptr) {
                op_free(op);
            } else {
                answer(*op, link, &part);
            }
        }

        return;
    }

    const char *reason = reply == nullptr ? nullptr
                         : reply->type == REDIS_REPLY_ERROR ? reply->str
                         : "unexpected reply to EVALSHA";

    /* the script cache was emptied: each op goes again on its own */
    if (is_noscript(reason) && !destroying_) {
        load_script(link, "SCRIPT LOAD again");
        reason = nullptr;

    } else if (reason && !destroying_) {
        failure(link, false, reason);
    }

    for (Op *op = ops, *next; op; op = next) {
        next = op->batch_next;
        op->batch_next = nullptr;

        if (op->request == nullptr || destroying_) {
            op_free(op);
            continue;
        }

        if (reply && reason == nullptr) {
            op->reloaded = true;

            if (evalsha(*op)) {
                continue;
            }
        }

        fail(*op);
        op_free(op);
    }
}


bool
Client::parse(Op &op, const redisReply *reply)
{
    try {
        scratch_.resize(op.nkeys);
    } catch (...) {
        return false;
    }

    if (ngx_http_rate_limit_parse_script_reply(reply, op.nkeys,
                                               scratch_.data())
        != NGX_HTTP_RATE_LIMIT_OK)
    {
        return false;
    }

    Request &req = *op.request;
    size_t n = 0;

    /* the script took the tokens only if all its keys allowed */
    bool taken = reply->element[0]->integer == 1;

    for (size_t i = 0; i < req.nkeys; i++) {
        if (req.ks[i].op != &op) {
            continue;
        }

        const ngx_http_rate_limit_decision_t &d = scratch_[n++];
        ngx_http_rate_limit_decision_t &out = req.keys[i].decision;

        out.allowed = d.allowed;
        out.remaining = d.remaining;
        out.retry_after_us = d.retry_after_us;
        out.reset_us = d.reset_us;

        req.keys[i].status = RL_REDIS_KEY_DECIDED;
        req.ks[i].taken = taken;
    }

    return true;
}


void
Client::op_timeout(Op &op)
{
    Link &link = *op.link;

    failure(link, false, "reply timed out");

    /* the op stays in the link's pipeline until its reply or the close */
    fail(op);

    check_stall(link);
}


/* the op's keys go to the zones' on_failure policies */
void
Client::fail(Op &op)
{
    Request &req = *op.request;

    for (size_t i = 0; i < req.nkeys; i++) {
        if (req.ks[i].op == &op) {
            req.keys[i].status = RL_REDIS_KEY_FAILED;
        }
    }

    over(op);
}


/* the op is over for the request; the last one calls it back */
void
Client::over(Op &op)
{
    Request *req = op.request;

    tq_remove(&op);
    op.request = nullptr;

    for (Op **pp = &req->ops; *pp; pp = &(*pp)->req_next) {
        if (*pp == &op) {
            *pp = op.req_next;
            break;
        }
    }

    op.req_next = nullptr;

    for (size_t i = 0; i < req->nkeys; i++) {
        if (req->ks[i].op == &op) {
            req->ks[i].op = nullptr;
        }
    }

    if (--req->nops) {
        return;
    }

    refund(*req);

    /* the request is free before the callback, which may ask again */
    void (*done)(void *) = req->done;
    void *data = req->data;

    request_free(req);

    done(data);
}


/*
 * In a cluster the keys of one request may be decided by several scripts.
 * When one rejects, those that took tokens give them back, so that a
 * rejected request costs no other limit anything, a moment later.
 */
void
Client::refund(Request &req)
{
    size_t i;

    for (i = 0; i < req.nkeys; i++) {
        if (req.keys[i].status == RL_REDIS_KEY_DECIDED
            && !req.keys[i].decision.allowed)
        {
            break;
        }
    }

    if (i == req.nkeys) {
        return;
    }

    for (i = 0; i < req.nkeys; i++) {
        if (!req.ks[i].taken) {
            continue;
        }

        req.ks[i].taken = false;

        Link *link = route(req.ks[i].slot);

        if (link) {
            send_refund(*link, req.keys[i]);
        }
    }
}


void
Client::send_refund(Link &link, const rl_redis_key_t &key)
{
    /* what EVAL would take after the script's text, kept for NOSCRIPT */
    Expect e;
    e.name = "refund";
    e.resend_argc = 6;

    try {
        append_arg(e.resend, "1", 1);
        append_arg(e.resend, reinterpret_cast<const char *>(key.key),
                   key.key_len);
        append_arg(e.resend, key.interval, key.interval_len);
        append_arg(e.resend, key.burst, key.burst_len);
        append_arg(e.resend, key.cost, key.cost_len);
        append_arg(e.resend, key.token_code, key.token_code_len);
    } catch (...) {
        return;
    }

    /* e moves into the link's FIFO only once its arguments are written */
    (void) queue(link, 2 + e.resend_argc, std::move(e), [&] {
        arg(link, "EVALSHA", 7);
        arg(link, ngx_http_rate_limit_refund_script_sha1(),
            NGX_HTTP_RATE_LIMIT_SHA1_HEX);
        raw(link, e.resend);
    });
}

}  // namespace redis
}  // namespace rl
