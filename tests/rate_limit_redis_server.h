/*
 * Real redis-servers for the test suites: each started on a free loopback
 * port in a temporary folder, with nothing saved, and stopped with its
 * object.  Without redis-server (RATE_LIMIT_REDIS_SERVER at build time, or
 * the environment variable of the same name) the suites skip their tests.
 */

#ifndef RATE_LIMIT_REDIS_SERVER_H
#define RATE_LIMIT_REDIS_SERVER_H

#include <hiredis/hiredis.h>

#include <gtest/gtest.h>

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <memory>
#include <string>
#include <thread>
#include <vector>


namespace rate_limit_test {

inline std::string redis_server_path()
{
    if (const char *from_env = std::getenv("RATE_LIMIT_REDIS_SERVER")) {
        return from_env;
    }
#ifdef RATE_LIMIT_REDIS_SERVER
    return RATE_LIMIT_REDIS_SERVER;
#else
    return "";
#endif
}


/* the executable, or "" when there is none to run */
inline std::string runnable_redis_server()
{
    const std::string executable = redis_server_path();
    if (executable.empty() || access(executable.c_str(), X_OK) != 0) {
        return "";
    }
    return executable;
}


/* a port nobody listens on right now; redis-server may still lose a race */
inline int free_loopback_port()
{
    const int fd = socket(AF_INET, SOCK_STREAM, 0);
    if (fd < 0) {
        return -1;
    }

    sockaddr_in address {};
    address.sin_family = AF_INET;
    address.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t address_len = sizeof(address);

    int port = -1;
    if (bind(fd, reinterpret_cast<sockaddr *>(&address), sizeof(address)) == 0
        && getsockname(fd, reinterpret_cast<sockaddr *>(&address),
                       &address_len) == 0)
    {
        port = ntohs(address.sin_port);
    }

    close(fd);
    return port;
}


struct ReplyDeleter {
    void operator()(redisReply *reply) const { freeReplyObject(reply); }
};
using Reply = std::unique_ptr<redisReply, ReplyDeleter>;

struct ContextDeleter {
    void operator()(redisContext *context) const { redisFree(context); }
};
using Context = std::unique_ptr<redisContext, ContextDeleter>;


inline Reply command(redisContext *context,
    const std::vector<std::string> &args)
{
    std::vector<const char *> argv;
    std::vector<size_t> argv_len;
    for (const std::string &arg : args) {
        argv.push_back(arg.data());
        argv_len.push_back(arg.size());
    }

    Reply reply(static_cast<redisReply *>(redisCommandArgv(
        context, static_cast<int>(argv.size()), argv.data(),
        argv_len.data())));
    EXPECT_TRUE(reply) << "no reply to " << args[0];
    return reply;
}


/* how a server is started */
struct RedisOptions {
    /* a cluster node has a bus port of its own, and no slot yet */
    bool         cluster = false;
    std::string  password;                 /* requirepass, "" for none */
    bool         unix_socket = false;      /* also listens on socket() */
};


/* one redis-server for the life of the object */
class RedisServer {
public:
    RedisServer(std::string executable, RedisOptions options)
        : executable_(std::move(executable)), options_(std::move(options))
    {}

    RedisServer(const RedisServer &) = delete;
    RedisServer &operator=(const RedisServer &) = delete;

    static std::unique_ptr<RedisServer> start(const std::string &executable,
        RedisOptions options = {})
    {
        for (int attempt = 0; attempt < 5; attempt++) {
            auto server = std::make_unique<RedisServer>(executable, options);
            if (server->prepare() && server->launch()) {
                return server;
            }
        }
        return nullptr;
    }

    ~RedisServer()
    {
        stop();
        if (!directory_.empty()) {
            std::error_code ignored;
            std::filesystem::remove_all(directory_, ignored);
        }
    }

    /* SIGTERM, and waits until it is gone; a frozen server is thawed */
    void stop()
    {
        if (pid_ > 0) {
            kill(pid_, SIGCONT);
            kill(pid_, SIGTERM);
            waitpid(pid_, nullptr, 0);
            pid_ = -1;
        }
    }

    /* starts it again, on the same port and in the same folder */
    bool restart()
    {
        stop();
        for (int attempt = 0; attempt < 20; attempt++) {
            if (launch()) {
                return true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(50));
        }
        return false;
    }

    /* SIGSTOP: the sockets stay open, nothing is answered */
    void freeze() const
    {
        if (pid_ > 0) {
            kill(pid_, SIGSTOP);
        }
    }

    void thaw() const
    {
        if (pid_ > 0) {
            kill(pid_, SIGCONT);
        }
    }

    int port() const { return port_; }
    int bus_port() const { return bus_port_; }
    const std::string &socket() const { return socket_; }

    /* a new synchronous connection, authenticated; null if it fails */
    Context connect() const
    {
        Context context(redisConnect("127.0.0.1", port_));
        if (!context || context->err != 0) {
            return nullptr;
        }
        if (!options_.password.empty()) {
            Reply reply(static_cast<redisReply *>(redisCommand(
                context.get(), "AUTH %s", options_.password.c_str())));
            if (!reply || reply->type == REDIS_REPLY_ERROR) {
                return nullptr;
            }
        }
        return context;
    }

private:
    /* the folder and the ports, kept across restarts */
    bool prepare()
    {
        char directory_template[] = "/tmp/rate-limit-redis-XXXXXX";
        if (mkdtemp(directory_template) == nullptr) {
            return false;
        }
        directory_ = directory_template;
        socket_ = directory_ + "/redis.sock";

        port_ = free_loopback_port();
        if (port_ < 0) {
            return false;
        }
        if (options_.cluster) {
            /* port + 10000, the default, may be taken or beyond 65535 */
            bus_port_ = free_loopback_port();
            if (bus_port_ < 0) {
                return false;
            }
        }
        return true;
    }

    bool launch()
    {
        const std::string port_text = std::to_string(port_);
        std::vector<std::string> args { executable_, "--port", port_text,
                                        "--bind", "127.0.0.1",
                                        "--save", "", "--appendonly", "no",
                                        "--daemonize", "no",
                                        "--dir", directory_,
                                        "--logfile", directory_ + "/log" };
        if (options_.cluster) {
            /*
             * A master answers CLUSTERDOWN for up to the node timeout
             * (5 s at most) after its start: keep that short.
             */
            args.insert(args.end(),
                        { "--cluster-enabled", "yes",
                          "--cluster-port", std::to_string(bus_port_),
                          "--cluster-node-timeout", "2000" });
        }
        if (!options_.password.empty()) {
            args.insert(args.end(), { "--requirepass", options_.password });
        }
        if (options_.unix_socket) {
            args.insert(args.end(), { "--unixsocket", socket_,
                                      "--unixsocketperm", "700" });
        }
        std::vector<char *> argv;
        for (std::string &arg : args) {
            argv.push_back(arg.data());
        }
        argv.push_back(nullptr);

        const pid_t parent = getpid();
        pid_ = fork();
        if (pid_ < 0) {
            return false;
        }

        if (pid_ == 0) {
            /*
             * A test that crashes runs no destructor: the server must still
             * go, and must not keep ctest waiting on the output pipes.
             */
            prctl(PR_SET_PDEATHSIG, SIGKILL);
            if (getppid() != parent) {
                _exit(1);
            }
            const int null_fd = open("/dev/null", O_RDWR);
            if (null_fd >= 0) {
                dup2(null_fd, STDIN_FILENO);
                dup2(null_fd, STDOUT_FILENO);
                dup2(null_fd, STDERR_FILENO);
            }
            execv(executable_.c_str(), argv.data());
            _exit(127);
        }

        const auto deadline = std::chrono::steady_clock::now()
                              + std::chrono::seconds(10);

        while (std::chrono::steady_clock::now() < deadline) {
            if (waitpid(pid_, nullptr, WNOHANG) == pid_) {
                pid_ = -1;              /* it exited: the port was taken */
                return false;
            }

            Context context = connect();
            if (context) {
                Reply pong(static_cast<redisReply *>(
                    redisCommand(context.get(), "PING")));
                if (pong && pong->type == REDIS_REPLY_STATUS) {
                    return true;
                }
            }

            std::this_thread::sleep_for(std::chrono::milliseconds(20));
        }

        return false;
    }

    std::string   executable_;
    RedisOptions  options_;
    pid_t         pid_ = -1;
    int           port_ = -1;
    int           bus_port_ = -1;
    std::string   directory_;
    std::string   socket_;
};


/* a node of a test cluster: its server, a connection to it, its id */
struct ClusterNode {
    std::unique_ptr<RedisServer>  server;
    Context                       context;
    std::string                   id;

    /* started in cluster mode, connected, and named; false if it fails */
    bool start(const std::string &executable)
    {
        RedisOptions options;
        options.cluster = true;

        server = RedisServer::start(executable, options);
        if (!server) {
            return false;
        }
        context = server->connect();
        if (!context) {
            return false;
        }
        Reply reply = command(context.get(), { "CLUSTER", "MYID" });
        if (!reply || reply->type != REDIS_REPLY_STRING) {
            return false;
        }
        id = reply->str;
        return true;
    }
};

} // namespace rate_limit_test

#endif
