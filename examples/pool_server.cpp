/* A small server whose connection and request objects come from mapalloc pools (C++17).
 *
 * Eight client threads each open a connection (a socketpair, so the example needs no
 * network) and send 2000 requests, "SET key value" and "GET key", one a line. One server
 * thread polls every connection; each connection is a Connection from an object_pool, each
 * parsed request a Request from another, the key-value store a std::map whose nodes come
 * from pool_allocator, and the response text a std::pmr::string on a pool_resource. At the
 * end every pool must be empty again and every client must have read the answers it
 * expected. Prints the counts and the pools' statistics; exits non-zero on any mismatch.
 */
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory_resource>
#include <string>
#include <thread>
#include <vector>

#include "mapalloc/memory_resource.hpp"
#include "mapalloc/pool.hpp"

namespace {

constexpr int clients = 8, requests_per_client = 2000;

[[noreturn]] void fail(const char *what) {
  std::fprintf(stderr, "pool_server: FAILED: %s (%s)\n", what, std::strerror(errno));
  std::exit(1);
}

struct Request {
  enum Kind { get, set } kind;
  std::string key, value;
};

struct Connection {
  int fd;
  std::string in;  /* bytes read, not yet a whole line */
  long served = 0; /* requests answered */
  explicit Connection(int f) : fd(f) {}
  ~Connection() { close(fd); }
};

using Store = std::map<std::string, std::string, std::less<>,
                       mapalloc::pool_allocator<std::pair<const std::string, std::string>>>;

void write_all(int fd, const char *p, std::size_t n) {
  while (n > 0) {
    const ssize_t w = write(fd, p, n);
    if (w < 0 && errno == EINTR) continue;
    if (w <= 0) fail("write");
    p += w;
    n -= static_cast<std::size_t>(w);
  }
}

/* The client: SET k<i> v<i>, then GET it back, and check each answer. */
void client(int fd, int id) {
  std::string buf;
  char chunk[4096];
  for (int i = 0; i < requests_per_client / 2; i++) {
    const std::string key = "k" + std::to_string(id) + "-" + std::to_string(i % 100);
    const std::string val = "v" + std::to_string(i);
    const std::string reqs = "SET " + key + " " + val + "\nGET " + key + "\n";
    write_all(fd, reqs.data(), reqs.size());
    /* Two answer lines: "OK" and the value. */
    int lines = 0;
    while (lines < 2) {
      const std::size_t nl = buf.find('\n');
      if (nl == std::string::npos) {
        const ssize_t r = read(fd, chunk, sizeof chunk);
        if (r <= 0) fail("client read");
        buf.append(chunk, static_cast<std::size_t>(r));
        continue;
      }
      const std::string line = buf.substr(0, nl);
      buf.erase(0, nl + 1);
      const std::string &expect = lines == 0 ? std::string("OK") : val;
      if (line != expect) {
        std::fprintf(stderr, "client %d: got '%s', expected '%s'\n", id, line.c_str(),
                     expect.c_str());
        std::exit(1);
      }
      lines++;
    }
  }
  shutdown(fd, SHUT_WR);
  close(fd);
}

} // namespace

int main() {
  mapalloc::object_pool<Connection> connections;
  mapalloc::object_pool<Request> request_pool;
  mapalloc::pool_resource scratch; /* response text */
  Store store;

  std::vector<mapalloc::object_pool<Connection>::handle> conns;
  std::vector<std::thread> threads;
  for (int i = 0; i < clients; i++) {
    int sv[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) fail("socketpair");
    conns.push_back(connections.make(sv[0]));
    threads.emplace_back(client, sv[1], i);
  }

  long served = 0;
  std::size_t open = conns.size();
  std::vector<pollfd> fds;
  char chunk[4096];
  while (open > 0) {
    fds.clear();
    for (auto &c : conns)
      if (c) fds.push_back({c->fd, POLLIN, 0});
    if (poll(fds.data(), fds.size(), 10000) <= 0) fail("poll (a client stalled?)");
    for (auto &c : conns) {
      if (!c) continue;
      const pollfd *p = nullptr;
      for (const auto &f : fds)
        if (f.fd == c->fd) p = &f;
      if (p == nullptr || (p->revents & (POLLIN | POLLHUP)) == 0) continue;
      const ssize_t r = read(c->fd, chunk, sizeof chunk);
      if (r < 0) fail("server read");
      if (r == 0) { /* the client is done: the Connection goes back to its pool */
        served += c->served;
        c.reset();
        open--;
        continue;
      }
      c->in.append(chunk, static_cast<std::size_t>(r));
      std::pmr::string out(&scratch);
      out.reserve(c->in.size()); /* one response buffer per batch, from the pool resource */
      std::size_t nl;
      while ((nl = c->in.find('\n')) != std::string::npos) {
        const std::string line = c->in.substr(0, nl);
        c->in.erase(0, nl + 1);
        auto req = request_pool.make();
        const std::size_t sp = line.find(' ');
        req->kind = line.compare(0, 4, "SET ") == 0 ? Request::set : Request::get;
        if (req->kind == Request::set) {
          const std::size_t sp2 = line.find(' ', sp + 1);
          req->key = line.substr(sp + 1, sp2 - sp - 1);
          req->value = line.substr(sp2 + 1);
          store[req->key] = req->value;
          out += "OK\n";
        } else {
          req->key = line.substr(sp + 1);
          auto it = store.find(req->key);
          out += it == store.end() ? std::string("NOTFOUND") : it->second;
          out += '\n';
        }
        c->served++;
      }
      write_all(c->fd, out.data(), out.size());
    }
  }
  for (auto &t : threads) t.join();

  const ma_pool_stats cs = connections.stats(), rs = request_pool.stats(), ss = scratch.stats();
  std::printf("pool_server: %d clients, %ld requests served, %zu keys stored\n", clients, served,
              store.size());
  std::printf("  connections: %zu allocated, %zu live; requests: %zu allocated, %zu live; "
              "response scratch: %zu blocks, %zu live\n",
              cs.allocs, cs.live, rs.allocs, rs.live, ss.allocs, ss.live);
  const bool ok = served == static_cast<long>(clients) * requests_per_client &&
                  store.size() == clients * 100u && cs.live == 0 && rs.live == 0 && ss.live == 0 &&
                  rs.allocs == static_cast<std::size_t>(served);
  std::puts(ok ? "pool_server: ok" : "pool_server: FAILED");
  return ok ? 0 : 1;
}
