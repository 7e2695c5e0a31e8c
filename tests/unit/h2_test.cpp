// The HTTP/2 sessions, driven in-process against real nghttp2 peers (and against each other):
// bytes from one side are fed to the other until neither has anything left to say.
#include "http/h2.h"

#include <gtest/gtest.h>
#include <nghttp2/nghttp2.h>

#include <cstring>
#include <deque>
#include <functional>
#include <map>
#include <memory>
#include <optional>
#include <random>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace sluice::http::h2 {
namespace {

using namespace std::string_literals;
using namespace std::string_view_literals;
using namespace std::chrono_literals;
using Fields = std::vector<std::pair<std::string, std::string>>;

std::string field(const Fields& fields, std::string_view name) {
  for (const auto& [n, v] : fields) {
    if (n == name) return v;
  }
  return {};
}
std::string pattern(size_t n, unsigned seed = 1) {
  std::string s(n, '\0');
  std::mt19937 rng(seed);
  for (char& c : s) c = static_cast<char>('!' + rng() % 94);
  return s;
}

// One raw HTTP/2 frame (RFC 9113 4.1), for what a well-behaved nghttp2 peer would not send.
std::string frame(uint8_t type, uint8_t flags, int32_t stream, std::string_view payload) {
  std::string f;
  const size_t n = payload.size();
  f += static_cast<char>(n >> 16);
  f += static_cast<char>(n >> 8);
  f += static_cast<char>(n);
  f += static_cast<char>(type);
  f += static_cast<char>(flags);
  f += static_cast<char>(stream >> 24);
  f += static_cast<char>(stream >> 16);
  f += static_cast<char>(stream >> 8);
  f += static_cast<char>(stream);
  f += payload;
  return f;
}

// ---------------------------------------------------------------------------------------------
// A plain nghttp2 session (client or server) as the peer of the session under test.

// How a RawPeer is set up.
struct RawOptions {
  std::vector<nghttp2_settings_entry> settings;
  bool manual_window = false;  // no automatic WINDOW_UPDATE: the test calls consume()
  size_t max_send_header_block = 0;
};

class RawPeer {
 public:
  using Options = RawOptions;

  enum class Kind { Client, Server };

  struct Stream {
    std::vector<Fields> blocks;  // header blocks in order: head (and 1xx), then trailers
    std::string body;
    bool end_stream = false;
    bool closed = false;
    uint32_t close_code = 0;
    bool rst_received = false;
    uint32_t rst_code = 0;

    const Fields& head() const { return blocks.front(); }
    int status() const { return blocks.empty() ? 0 : std::stoi(field(blocks.back(), ":status")); }
  };

  explicit RawPeer(Kind kind, Options o = {}) : kind_(kind) {
    nghttp2_session_callbacks* cbs;
    nghttp2_session_callbacks_new(&cbs);
    nghttp2_session_callbacks_set_on_begin_headers_callback(cbs, on_begin_headers);
    nghttp2_session_callbacks_set_on_header_callback(cbs, on_header);
    nghttp2_session_callbacks_set_on_frame_recv_callback(cbs, on_frame_recv);
    nghttp2_session_callbacks_set_on_data_chunk_recv_callback(cbs, on_data);
    nghttp2_session_callbacks_set_on_stream_close_callback(cbs, on_close);
    nghttp2_option* opt;
    nghttp2_option_new(&opt);
    if (o.manual_window) nghttp2_option_set_no_auto_window_update(opt, 1);
    if (o.max_send_header_block > 0) {
      nghttp2_option_set_max_send_header_block_length(opt, o.max_send_header_block);
    }
    if (kind == Kind::Client) {
      nghttp2_session_client_new2(&s, cbs, this, opt);
    } else {
      nghttp2_session_server_new2(&s, cbs, this, opt);
    }
    nghttp2_option_del(opt);
    nghttp2_session_callbacks_del(cbs);
    nghttp2_submit_settings(s, NGHTTP2_FLAG_NONE, o.settings.data(), o.settings.size());
  }
  ~RawPeer() { nghttp2_session_del(s); }

  std::string output() {
    std::string out;
    const uint8_t* data;
    ssize_t n;
    while ((n = nghttp2_session_mem_send(s, &data)) > 0) {
      out.append(reinterpret_cast<const char*>(data), static_cast<size_t>(n));
    }
    return out;
  }
  void receive(std::string_view bytes) {
    recv_rv =
        nghttp2_session_mem_recv(s, reinterpret_cast<const uint8_t*>(bytes.data()), bytes.size());
  }

  // Client: a request; `body` present = DATA follows (then `trailers` if any).
  int32_t request(const Fields& head, std::optional<std::string> body = std::nullopt,
                  const Fields& trailers = {}) {
    auto nv = to_nv(head);
    nghttp2_data_provider prd = provider(body, trailers);
    return nghttp2_submit_request(s, nullptr, nv.data(), nv.size(), body ? &prd : nullptr, nullptr);
  }
  int32_t get(std::string path = "/", const Fields& extra = {}) {
    Fields h = {{":method", "GET"},
                {":scheme", "https"},
                {":authority", "example.com"},
                {":path", std::move(path)}};
    h.insert(h.end(), extra.begin(), extra.end());
    return request(h);
  }
  // Server: a response.
  void respond(int32_t id, const Fields& head, std::optional<std::string> body = std::nullopt,
               const Fields& trailers = {}) {
    auto nv = to_nv(head);
    nghttp2_data_provider prd = provider(body, trailers);
    nghttp2_submit_response(s, id, nv.data(), nv.size(), body ? &prd : nullptr);
  }
  void consume(int32_t id, size_t n) { nghttp2_session_consume(s, id, n); }

  nghttp2_session* s = nullptr;
  std::map<int32_t, Stream> streams;
  std::vector<int32_t> ended;  // streams whose peer side ended, in order
  int goaways = 0;
  uint32_t goaway_code = 0;
  int32_t goaway_last = -1;
  ssize_t recv_rv = 0;
  std::function<void(RawPeer&, int32_t)> on_end;  // called when a stream's peer side ends

 private:
  struct Outgoing {
    std::string data;
    size_t pos = 0;
    Fields trailers;
  };

  // Names are passed with NO_COPY_NAME, which also keeps nghttp2 from lower-casing them (so a
  // test can send what a broken client would): they must live until sent, hence kept_.
  std::vector<nghttp2_nv> to_nv(const Fields& fields) {
    kept_.push_back(fields);
    std::vector<nghttp2_nv> nv;
    for (const auto& [n, v] : kept_.back()) {
      nv.push_back({reinterpret_cast<uint8_t*>(const_cast<char*>(n.data())),
                    reinterpret_cast<uint8_t*>(const_cast<char*>(v.data())), n.size(), v.size(),
                    NGHTTP2_NV_FLAG_NO_COPY_NAME});
    }
    return nv;
  }
  nghttp2_data_provider provider(const std::optional<std::string>& body, const Fields& trailers) {
    nghttp2_data_provider prd{};
    if (!body) return prd;
    outgoing_.push_back(std::make_unique<Outgoing>(Outgoing{*body, 0, trailers}));
    prd.source.ptr = outgoing_.back().get();
    prd.read_callback = [](nghttp2_session* session, int32_t id, uint8_t* buf, size_t length,
                           uint32_t* flags, nghttp2_data_source* src, void* user) -> ssize_t {
      auto* o = static_cast<Outgoing*>(src->ptr);
      const size_t n = std::min(length, o->data.size() - o->pos);
      std::memcpy(buf, o->data.data() + o->pos, n);
      o->pos += n;
      if (o->pos == o->data.size()) {
        *flags |= NGHTTP2_DATA_FLAG_EOF;
        if (!o->trailers.empty()) {
          auto nv = self(user).to_nv(o->trailers);
          nghttp2_submit_trailer(session, id, nv.data(), nv.size());
          *flags |= NGHTTP2_DATA_FLAG_NO_END_STREAM;
        }
      }
      return static_cast<ssize_t>(n);
    };
    return prd;
  }

  static RawPeer& self(void* user) { return *static_cast<RawPeer*>(user); }
  static int on_begin_headers(nghttp2_session*, const nghttp2_frame* f, void* user) {
    if (f->hd.type == NGHTTP2_HEADERS) self(user).streams[f->hd.stream_id].blocks.emplace_back();
    return 0;
  }
  static int on_header(nghttp2_session*, const nghttp2_frame* f, const uint8_t* name, size_t nl,
                       const uint8_t* value, size_t vl, uint8_t, void* user) {
    self(user).streams[f->hd.stream_id].blocks.back().emplace_back(
        std::string(reinterpret_cast<const char*>(name), nl),
        std::string(reinterpret_cast<const char*>(value), vl));
    return 0;
  }
  static int on_frame_recv(nghttp2_session*, const nghttp2_frame* f, void* user) {
    RawPeer& p = self(user);
    if (f->hd.type == NGHTTP2_GOAWAY) {
      ++p.goaways;
      p.goaway_code = f->goaway.error_code;
      p.goaway_last = f->goaway.last_stream_id;
    } else if (f->hd.type == NGHTTP2_RST_STREAM) {
      p.streams[f->hd.stream_id].rst_received = true;
      p.streams[f->hd.stream_id].rst_code = f->rst_stream.error_code;
    } else if ((f->hd.type == NGHTTP2_HEADERS || f->hd.type == NGHTTP2_DATA) &&
               (f->hd.flags & NGHTTP2_FLAG_END_STREAM)) {
      p.streams[f->hd.stream_id].end_stream = true;
      p.ended.push_back(f->hd.stream_id);
      if (p.on_end) p.on_end(p, f->hd.stream_id);
    }
    return 0;
  }
  static int on_data(nghttp2_session*, uint8_t, int32_t id, const uint8_t* data, size_t len,
                     void* user) {
    self(user).streams[id].body.append(reinterpret_cast<const char*>(data), len);
    return 0;
  }
  static int on_close(nghttp2_session*, int32_t id, uint32_t code, void* user) {
    self(user).streams[id].closed = true;
    self(user).streams[id].close_code = code;
    return 0;
  }

  Kind kind_;
  std::vector<std::unique_ptr<Outgoing>> outgoing_;
  std::deque<Fields> kept_;
};

// ---------------------------------------------------------------------------------------------
// Owners that record every event.

struct Closed {
  StreamEnd how;
  ErrorCode code;
};

Fields copy(std::span<const Header> headers) {
  Fields f;
  for (const Header& h : headers) f.emplace_back(std::string(h.name), std::string(h.value));
  return f;
}

struct ServerOwner : ServerEvents {
  struct Req {
    std::string method, scheme, authority, path, protocol;
    Fields headers;
    Body body = Body::None;
    std::string data;
    Fields trailers;
    bool ended = false;
    std::optional<Closed> closed;
    int send_ready = 0;
  };
  std::map<StreamId, Req> reqs;
  std::vector<StreamId> order;
  std::vector<std::pair<StreamId, ErrorCode>> goaways;
  ServerSession* session = nullptr;
  bool auto_consume = true;
  std::function<void(StreamId)> when_request;
  std::function<void(StreamId, std::string_view)> when_data;
  std::function<void(StreamId)> when_ended;  // e.g. answer once the request is complete
  std::function<void(StreamId)> when_ready;

  void on_request(StreamId id, const Request& r, Body body) override {
    Req& q = reqs[id];
    q.method = r.method;
    q.scheme = r.scheme;
    q.authority = r.authority;
    q.path = r.path;
    q.protocol = r.protocol;
    q.headers = copy(r.headers);
    q.body = body;
    order.push_back(id);
    if (when_request) when_request(id);
  }
  void on_data(StreamId id, std::string_view data) override {
    reqs[id].data += data;
    if (auto_consume) session->consume(id, data.size());
    if (when_data) when_data(id, data);
  }
  void on_trailers(StreamId id, std::span<const Header> fields) override {
    reqs[id].trailers = copy(fields);
  }
  void on_end_stream(StreamId id) override {
    EXPECT_FALSE(reqs[id].ended) << "on_end_stream twice for " << id;
    reqs[id].ended = true;
    if (when_ended) when_ended(id);
  }
  void on_send_ready(StreamId id) override {
    ++reqs[id].send_ready;
    if (when_ready) when_ready(id);
  }
  void on_stream_close(StreamId id, StreamEnd how, ErrorCode code) override {
    EXPECT_TRUE(reqs.count(id)) << "close of a stream never shown: " << id;
    EXPECT_FALSE(reqs[id].closed) << "on_stream_close twice for " << id;
    reqs[id].closed = Closed{how, code};
  }
  void on_goaway(StreamId last, ErrorCode code) override { goaways.emplace_back(last, code); }
};

struct ClientOwner : ClientEvents {
  struct Resp {
    int status = 0;
    Fields headers;
    Body body = Body::None;
    int heads = 0;
    std::string data;
    Fields trailers;
    bool ended = false;
    std::optional<Closed> closed;
  };
  std::map<StreamId, Resp> resps;
  std::vector<std::pair<StreamId, ErrorCode>> goaways;
  ClientSession* session = nullptr;
  std::function<void(StreamId)> when_ready;

  void on_response(StreamId id, const Response& r, Body body) override {
    Resp& p = resps[id];
    p.status = r.status;
    p.headers = copy(r.headers);
    p.body = body;
    ++p.heads;
  }
  void on_data(StreamId id, std::string_view data) override {
    resps[id].data += data;
    session->consume(id, data.size());
  }
  void on_trailers(StreamId id, std::span<const Header> fields) override {
    resps[id].trailers = copy(fields);
  }
  void on_end_stream(StreamId id) override { resps[id].ended = true; }
  void on_send_ready(StreamId id) override {
    if (when_ready) when_ready(id);
  }
  void on_stream_close(StreamId id, StreamEnd how, ErrorCode code) override {
    EXPECT_FALSE(resps[id].closed) << "on_stream_close twice for " << id;
    resps[id].closed = Closed{how, code};
  }
  void on_goaway(StreamId last, ErrorCode code) override { goaways.emplace_back(last, code); }
};

// ---------------------------------------------------------------------------------------------
// Moving bytes.

std::string drain(SessionBase& session) {
  std::string out;
  for (;;) {
    const size_t before = out.size();
    session.pending_output(out);
    if (out.size() == before || !session.want_write()) return out;
  }
}

// Client bytes -> server, server bytes -> client, until quiet. Returns the server's first failure.
Status pump(RawPeer& client, ServerSession& server, Clock::time_point now = Clock::now()) {
  Status first;
  for (int round = 0; round < 10000; ++round) {
    const std::string up = client.output();
    if (!up.empty()) {
      Status st = server.receive(up, now);
      if (first.ok()) first = st;
    }
    const std::string down = drain(server);
    if (!down.empty()) client.receive(down);
    if (up.empty() && down.empty()) return first;
  }
  ADD_FAILURE() << "pump did not settle";
  return first;
}

Status pump(ClientSession& client, RawPeer& server) {
  Status first;
  for (int round = 0; round < 10000; ++round) {
    const std::string up = drain(client);
    if (!up.empty()) server.receive(up);
    const std::string down = server.output();
    if (!down.empty()) {
      Status st = client.receive(down);
      if (first.ok()) first = st;
    }
    if (up.empty() && down.empty()) return first;
  }
  ADD_FAILURE() << "pump did not settle";
  return first;
}

void pump(ClientSession& client, ServerSession& server) {
  for (int round = 0; round < 10000; ++round) {
    const std::string up = drain(client);
    if (!up.empty()) {
      EXPECT_TRUE(server.receive(up).ok());
    }
    const std::string down = drain(server);
    if (!down.empty()) {
      EXPECT_TRUE(client.receive(down).ok());
    }
    if (up.empty() && down.empty()) return;
  }
  ADD_FAILURE() << "pump did not settle";
}

// A server session with its owner, handshake done.
struct ServerFixture {
  explicit ServerFixture(Limits limits = {}, RawPeer::Options client_options = {})
      : client(RawPeer::Kind::Client, std::move(client_options)), server(limits, owner) {
    owner.session = &server;
    EXPECT_TRUE(pump(client, server).ok());
  }
  RawPeer client;
  ServerOwner owner;
  ServerSession server;
};

const std::vector<Header> k_no_headers;

// ---------------------------------------------------------------------------------------------
// Preface detection (h2c prior knowledge).

TEST(H2Preface, FullPrefaceIsH2AndAnythingElseIsHttp1OrUndecided) {
  EXPECT_TRUE(is_h2_preface("PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"));
  EXPECT_TRUE(is_h2_preface(std::string(k_client_preface) + "\x00\x00\x00\x04"s));
  EXPECT_EQ(detect_preface("PRI * HTTP/2.0\r\n"), Preface::NeedMore);
  EXPECT_EQ(detect_preface("P"), Preface::NeedMore);
  EXPECT_EQ(detect_preface(""), Preface::NeedMore);
  EXPECT_FALSE(is_h2_preface("PRI * HTTP/2.0\r\n"));
  EXPECT_EQ(detect_preface("GET / HTTP/1.1\r\n"), Preface::Http1);
  EXPECT_EQ(detect_preface("PRINT / HTTP/1.1\r\n"), Preface::Http1);  // differs at byte 4
  EXPECT_EQ(detect_preface("PRI * HTTP/1.1\r\n\r\n"), Preface::Http1);
}

// ---------------------------------------------------------------------------------------------
// Server: basics.

TEST(H2Server, SettingsAdvertiseTheLimitsAndKeepExtendedConnectOff) {
  Limits limits;
  limits.max_concurrent_streams = 7;
  limits.initial_window = 12345;
  limits.max_header_list_size = 9999;
  limits.max_frame_size = 32768;
  ServerFixture f(limits);
  nghttp2_session* c = f.client.s;
  EXPECT_EQ(nghttp2_session_get_remote_settings(c, NGHTTP2_SETTINGS_MAX_CONCURRENT_STREAMS), 7u);
  EXPECT_EQ(nghttp2_session_get_remote_settings(c, NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE), 12345u);
  EXPECT_EQ(nghttp2_session_get_remote_settings(c, NGHTTP2_SETTINGS_MAX_HEADER_LIST_SIZE), 9999u);
  EXPECT_EQ(nghttp2_session_get_remote_settings(c, NGHTTP2_SETTINGS_MAX_FRAME_SIZE), 32768u);
  EXPECT_EQ(nghttp2_session_get_remote_settings(c, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL), 0u);
  // The session window was opened beyond the RFC default of 65535.
  EXPECT_EQ(nghttp2_session_get_remote_window_size(c), int32_t{1 << 20});

  Limits ws;
  ws.enable_connect_protocol = true;
  ServerFixture g(ws);
  EXPECT_EQ(
      nghttp2_session_get_remote_settings(g.client.s, NGHTTP2_SETTINGS_ENABLE_CONNECT_PROTOCOL),
      1u);
}

TEST(H2Server, SimpleGetIsValidatedDeliveredAndAnswered) {
  ServerFixture f;
  const int32_t id =
      f.client.get("/items?id=7", {{"accept", "*/*"}, {"user-agent", "test"}, {"te", "trailers"}});
  ASSERT_TRUE(pump(f.client, f.server).ok());

  ASSERT_EQ(f.owner.order.size(), 1u);
  ASSERT_EQ(f.owner.order[0], id);
  const ServerOwner::Req& r = f.owner.reqs[id];
  EXPECT_EQ(r.method, "GET");
  EXPECT_EQ(r.scheme, "https");
  EXPECT_EQ(r.authority, "example.com");
  EXPECT_EQ(r.path, "/items?id=7");
  EXPECT_EQ(r.protocol, "");
  EXPECT_EQ(r.body, Body::None);
  EXPECT_TRUE(r.ended);
  EXPECT_EQ(r.headers, (Fields{{"accept", "*/*"}, {"user-agent", "test"}, {"te", "trailers"}}));
  EXPECT_FALSE(r.closed);

  // A head as an HTTP/1 upstream would hand it over: mixed case and hop-by-hop fields.
  const std::vector<Header> head = {{"Content-Type", "text/plain"},
                                    {"Connection", "keep-alive, X-Hop"},
                                    {"Keep-Alive", "timeout=5"},
                                    {"Transfer-Encoding", "chunked"},
                                    {"X-Hop", "1"},
                                    {"Upgrade", "h2c"},
                                    {"X-Served-By", "b1"}};
  ASSERT_EQ(f.server.submit_response(id, 200, head, Body::Follows), Submit::Ok);
  EXPECT_EQ(f.server.submit_response(id, 200, head, Body::Follows), Submit::Closed);
  EXPECT_EQ(f.server.submit_data(id, "hello", EndStream::Yes), Send::Ready);
  EXPECT_EQ(f.server.submit_data(id, "more", EndStream::Yes), Send::Closed);
  ASSERT_TRUE(pump(f.client, f.server).ok());

  const RawPeer::Stream& s = f.client.streams[id];
  EXPECT_EQ(s.status(), 200);
  EXPECT_EQ(s.head(),
            (Fields{{":status", "200"}, {"content-type", "text/plain"}, {"x-served-by", "b1"}}));
  EXPECT_EQ(s.body, "hello");
  EXPECT_TRUE(s.end_stream);
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::Complete);
  EXPECT_EQ(r.closed->code, ErrorCode::NoError);
  EXPECT_EQ(f.server.open_streams(), 0u);
  EXPECT_EQ(f.server.stats().streams, 1u);
  EXPECT_TRUE(f.server.want_read());  // the connection stays open for more requests
}

TEST(H2Server, HostHeaderStandsInForAuthorityAndCookieCrumbsAreJoined) {
  ServerFixture f;
  const int32_t id = f.client.request({{":method", "GET"},
                                       {":scheme", "http"},
                                       {":path", "/"},
                                       {"cookie", "a=1"},
                                       {"host", "h.example"},
                                       {"cookie", "b=2"},
                                       {"x-other", "x"},
                                       {"cookie", "c=3"}});
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_TRUE(f.owner.reqs.count(id));
  const ServerOwner::Req& r = f.owner.reqs[id];
  EXPECT_EQ(r.authority, "h.example");
  EXPECT_EQ(r.headers,
            (Fields{{"cookie", "a=1; b=2; c=3"}, {"host", "h.example"}, {"x-other", "x"}}));
}

// ---------------------------------------------------------------------------------------------
// Server: flow control and backpressure.

TEST(H2Server, RequestBodyBeyondTheWindowFlowsOnlyAsTheOwnerConsumes) {
  Limits limits;
  limits.initial_window = 16384;
  ServerFixture f(limits);
  f.owner.auto_consume = false;
  const std::string body = pattern(100000);
  const int32_t id = f.client.request({{":method", "POST"},
                                       {":scheme", "https"},
                                       {":authority", "example.com"},
                                       {":path", "/upload"},
                                       {"content-length", std::to_string(body.size())}},
                                      body);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ServerOwner::Req& r = f.owner.reqs[id];
  EXPECT_EQ(r.body, Body::Follows);
  EXPECT_EQ(r.data.size(), 16384u);  // exactly one stream window, then the client must wait
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(r.data.size(), 16384u) << "data flowed without consume()";
  EXPECT_EQ(nghttp2_session_get_stream_remote_window_size(f.client.s, id), 0);

  // Forwarding upstream in pieces reopens the window piece by piece.
  size_t consumed = 0;
  int rounds = 0;
  while (r.data.size() > consumed && rounds++ < 100) {
    const size_t n = r.data.size() - consumed;
    f.server.consume(id, n);
    consumed += n;
    ASSERT_TRUE(pump(f.client, f.server).ok());
    EXPECT_LE(r.data.size() - consumed, 16384u);
  }
  EXPECT_EQ(r.data, body);
  EXPECT_TRUE(r.ended);
}

TEST(H2Server, ResponseBodyWaitsForThePeerWindowAndSignalsWhenItCanTakeMore) {
  Limits limits;
  limits.stream_buffer = 32768;
  RawPeer::Options o;
  o.manual_window = true;
  o.settings = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 16384}};
  ServerFixture f(limits, o);
  const int32_t id = f.client.get("/big");
  ASSERT_TRUE(pump(f.client, f.server).ok());

  const std::string body = pattern(200000, 7);
  size_t offered = 0;
  // The producer: offers 64 KiB pieces until told to wait, resumes on on_send_ready.
  auto produce = [&] {
    for (;;) {
      const size_t n = std::min<size_t>(65536, body.size() - offered);
      const bool last = offered + n == body.size();
      const Send s = f.server.submit_data(id, std::string_view(body).substr(offered, n),
                                          last ? EndStream::Yes : EndStream::No);
      if (s == Send::Blocked) return;
      EXPECT_NE(s, Send::Closed);
      offered += n;
      if (last || s == Send::Full) return;
    }
  };
  f.owner.when_ready = [&](StreamId) { produce(); };
  ASSERT_EQ(f.server.submit_response(id, 200, k_no_headers, Body::Follows), Submit::Ok);
  produce();
  EXPECT_EQ(offered, 65536u);  // one piece filled the 32 KiB bound
  EXPECT_EQ(f.server.submit_data(id, "x", EndStream::No), Send::Blocked);

  ASSERT_TRUE(pump(f.client, f.server).ok());
  RawPeer::Stream& s = f.client.streams[id];
  EXPECT_EQ(s.body.size(), 16384u);  // the client's window, no more
  EXPECT_EQ(f.server.buffered(id), 65536u - 16384u);
  EXPECT_EQ(f.owner.reqs[id].send_ready, 0);  // still at or over the bound

  int rounds = 0;
  size_t seen = 0;
  while (!s.end_stream && rounds++ < 100) {
    f.client.consume(id, s.body.size() - seen);
    seen = s.body.size();
    ASSERT_TRUE(pump(f.client, f.server).ok());
  }
  EXPECT_EQ(s.body, body);
  EXPECT_GT(f.owner.reqs[id].send_ready, 0);
  ASSERT_TRUE(f.owner.reqs[id].closed);
  EXPECT_EQ(f.owner.reqs[id].closed->how, StreamEnd::Complete);
}

TEST(H2Server, SessionBufferBoundsAllStreamsTogether) {
  Limits limits;
  limits.stream_buffer = 32768;
  limits.session_buffer = 40000;
  RawPeer::Options o;
  o.manual_window = true;
  o.settings = {{NGHTTP2_SETTINGS_INITIAL_WINDOW_SIZE, 0}};  // nothing drains
  ServerFixture f(limits, o);
  const int32_t a = f.client.get("/a");
  const int32_t b = f.client.get("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_EQ(f.server.submit_response(a, 200, k_no_headers, Body::Follows), Submit::Ok);
  ASSERT_EQ(f.server.submit_response(b, 200, k_no_headers, Body::Follows), Submit::Ok);
  EXPECT_EQ(f.server.submit_data(a, std::string(30000, 'a'), EndStream::No), Send::Ready);
  EXPECT_EQ(f.server.submit_data(b, std::string(20000, 'b'), EndStream::No), Send::Full);
  EXPECT_EQ(f.server.submit_data(b, "b", EndStream::No), Send::Blocked);
  EXPECT_EQ(f.server.submit_data(a, "a", EndStream::No), Send::Blocked);
  // Resetting one stream frees its share: the other is told it can go on.
  f.server.reset_stream(a, ErrorCode::Cancel);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.owner.reqs[b].send_ready, 1);
  EXPECT_EQ(f.owner.reqs[a].send_ready, 0);
  EXPECT_EQ(f.server.submit_data(b, "b", EndStream::No), Send::Ready);
}

// Found by tests/fuzz/h2_session_fuzz.cpp: when several waiting streams had room at once and the
// first one's on_send_ready filled the session buffer again, the others were still told they
// could go on (and then got Blocked).
TEST(H2Server, SendReadyOnlyWhileTheSessionBufferHasRoom) {
  Limits limits;
  limits.stream_buffer = 100;
  limits.session_buffer = 150;
  ServerFixture f(limits);
  const int32_t a = f.client.get("/a");
  const int32_t b = f.client.get("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_EQ(f.server.submit_response(a, 200, k_no_headers, Body::Follows), Submit::Ok);
  ASSERT_EQ(f.server.submit_response(b, 200, k_no_headers, Body::Follows), Submit::Ok);
  EXPECT_EQ(f.server.submit_data(a, std::string(200, 'a'), EndStream::No), Send::Full);
  EXPECT_EQ(f.server.submit_data(b, "b", EndStream::No), Send::Blocked);
  std::map<StreamId, int> rounds;
  int blocked = 0;
  f.owner.when_ready = [&](StreamId id) {
    // Each stream refills the whole session buffer; the other must wait until it drains.
    const bool last = ++rounds[id] == 3;
    const Send r =
        f.server.submit_data(id, std::string(200, 'x'), last ? EndStream::Yes : EndStream::No);
    if (r == Send::Blocked) ++blocked;
  };
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(blocked, 0);
  EXPECT_EQ(rounds[a], 3);
  EXPECT_EQ(rounds[b], 3);
  EXPECT_EQ(f.client.streams[a].body.size(), 800u);
  EXPECT_EQ(f.client.streams[b].body.size(), 600u);
  EXPECT_TRUE(f.client.streams[a].end_stream && f.client.streams[b].end_stream);
}

// Found by tests/fuzz/h2_session_fuzz.cpp: after an on_send_ready that terminated the session,
// the other streams that had room were still told so.
TEST(H2Server, NoSendReadyAfterAnEventTerminatedTheSession) {
  Limits limits;
  limits.stream_buffer = 100;
  ServerFixture f(limits);
  const int32_t a = f.client.get("/a");
  const int32_t b = f.client.get("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  for (const int32_t id : {a, b}) {
    ASSERT_EQ(f.server.submit_response(id, 200, k_no_headers, Body::Follows), Submit::Ok);
    EXPECT_EQ(f.server.submit_data(id, std::string(200, 'x'), EndStream::No), Send::Full);
  }
  int ready = 0;
  f.owner.when_ready = [&](StreamId) {
    ++ready;
    f.server.terminate(ErrorCode::InternalError);
  };
  pump(f.client, f.server);
  EXPECT_EQ(ready, 1);
  for (const int32_t id : {a, b}) {
    ASSERT_TRUE(f.owner.reqs[id].closed);
    EXPECT_EQ(f.owner.reqs[id].closed->how, StreamEnd::SessionEnded);
  }
}

TEST(H2Server, UnconsumedBodyOfAResetStreamReturnsToTheSessionWindow) {
  Limits limits;
  limits.initial_window = 65535;
  limits.connection_window = 65535;  // one stream can fill the whole session window
  ServerFixture f(limits);
  f.owner.auto_consume = false;
  auto post = [&](std::string path) {
    return f.client.request({{":method", "POST"},
                             {":scheme", "https"},
                             {":authority", "example.com"},
                             {":path", std::move(path)}},
                            std::string(60000, 'x'));
  };
  const int32_t a = post("/a");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.owner.reqs[a].data.size(), 60000u);  // never consumed
  nghttp2_submit_rst_stream(f.client.s, NGHTTP2_FLAG_NONE, a, NGHTTP2_CANCEL);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_TRUE(f.owner.reqs[a].closed);
  EXPECT_EQ(f.owner.reqs[a].closed->how, StreamEnd::PeerReset);
  EXPECT_EQ(f.owner.reqs[a].closed->code, ErrorCode::Cancel);

  const int32_t b = post("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.owner.reqs[b].data.size(), 60000u) << "the closed stream kept the session window";
}

// ---------------------------------------------------------------------------------------------
// Server: trailers (gRPC).

TEST(H2Server, GrpcStyleExchangeCarriesTrailersBothWays) {
  ServerFixture f;
  const std::string message = std::string("\0\0\0\0\5hello", 10);
  const int32_t id = f.client.request({{":method", "POST"},
                                       {":scheme", "http"},
                                       {":authority", "grpc.local"},
                                       {":path", "/pkg.Svc/Call"},
                                       {"content-type", "application/grpc"},
                                       {"te", "trailers"}},
                                      message, {{"x-request-checksum", "abc"}});
  f.owner.when_ended = [&](StreamId s) {
    const std::vector<Header> head = {{"content-type", "application/grpc"}};
    ASSERT_EQ(f.server.submit_response(s, 200, head, Body::Follows), Submit::Ok);
    EXPECT_EQ(f.server.submit_data(s, message, EndStream::No), Send::Ready);
    const std::vector<Header> trailers = {{"grpc-status", "0"}, {"Grpc-Message", "OK"}};
    EXPECT_EQ(f.server.submit_trailers(s, trailers), Submit::Ok);
    EXPECT_EQ(f.server.submit_data(s, "late", EndStream::Yes), Send::Closed);
  };
  ASSERT_TRUE(pump(f.client, f.server).ok());

  const ServerOwner::Req& r = f.owner.reqs[id];
  EXPECT_EQ(r.data, message);
  EXPECT_EQ(r.trailers, (Fields{{"x-request-checksum", "abc"}}));
  EXPECT_TRUE(r.ended);
  const RawPeer::Stream& s = f.client.streams[id];
  ASSERT_EQ(s.blocks.size(), 2u);
  EXPECT_EQ(field(s.head(), "content-type"), "application/grpc");
  EXPECT_EQ(s.body, message);
  EXPECT_EQ(s.blocks[1], (Fields{{"grpc-status", "0"}, {"grpc-message", "OK"}}));
  EXPECT_TRUE(s.end_stream);
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::Complete);
}

TEST(H2Server, TrailersNeedAnOpenBody) {
  ServerFixture f;
  const int32_t id = f.client.get();
  ASSERT_TRUE(pump(f.client, f.server).ok());
  const std::vector<Header> t = {{"grpc-status", "0"}};
  EXPECT_EQ(f.server.submit_trailers(id, t), Submit::Invalid);  // no head yet
  ASSERT_EQ(f.server.submit_response(id, 204, k_no_headers, Body::None), Submit::Ok);
  EXPECT_EQ(f.server.submit_trailers(id, t), Submit::Closed);
  EXPECT_EQ(f.server.submit_response(999, 200, k_no_headers, Body::None), Submit::Closed);
  EXPECT_EQ(f.server.submit_data(999, "x", EndStream::Yes), Send::Closed);
}

// ---------------------------------------------------------------------------------------------
// Server: limits and abuse.

TEST(H2Server, StreamsBeyondTheConcurrencyLimitAreRefused) {
  Limits limits;
  limits.max_concurrent_streams = 10;
  RawPeer client(RawPeer::Kind::Client);
  ServerOwner owner;
  ServerSession server(limits, owner);
  owner.session = &server;
  // Sent before the client has seen our SETTINGS, as a client racing its first flight would.
  std::vector<int32_t> ids;
  for (int i = 0; i < 15; ++i) ids.push_back(client.get("/" + std::to_string(i)));
  ASSERT_TRUE(pump(client, server).ok());

  EXPECT_EQ(owner.order.size(), 10u);
  EXPECT_EQ(server.stats().refused, 5u);
  int refused = 0;
  for (int32_t id : ids) {
    const RawPeer::Stream& s = client.streams[id];
    if (s.closed && s.close_code == NGHTTP2_REFUSED_STREAM) {
      ++refused;
      EXPECT_FALSE(owner.reqs.count(id)) << "a refused stream reached the owner";
    }
  }
  EXPECT_EQ(refused, 5);
  for (StreamId id : owner.order) {
    ASSERT_EQ(server.submit_response(id, 200, k_no_headers, Body::None), Submit::Ok);
  }
  ASSERT_TRUE(pump(client, server).ok());
  for (StreamId id : owner.order) EXPECT_EQ(client.streams[id].status(), 200);
  EXPECT_TRUE(server.status().ok());
}

// Opens `n` streams and cancels them right away, as CVE-2023-44487 does.
std::string open_and_cancel(RawPeer& client, int n) {
  std::vector<int32_t> ids;
  for (int i = 0; i < n; ++i) ids.push_back(client.get());
  std::string bytes = client.output();
  for (int32_t id : ids) nghttp2_submit_rst_stream(client.s, NGHTTP2_FLAG_NONE, id, NGHTTP2_CANCEL);
  return bytes + client.output();
}

TEST(H2Server, RapidResetGetsGoawayEnhanceYourCalm) {
  Limits limits;
  limits.max_resets_per_second = 20;
  ServerFixture f(limits);
  const auto t0 = Clock::now();
  const Status st = f.server.receive(open_and_cancel(f.client, 30), t0);
  EXPECT_EQ(st.failure, Failure::Flood);
  EXPECT_EQ(st.code, ErrorCode::EnhanceYourCalm);
  EXPECT_EQ(st.reason, "rapid reset");
  f.client.receive(drain(f.server));
  EXPECT_EQ(f.client.goaways, 1);
  EXPECT_EQ(f.client.goaway_code, uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_FALSE(f.server.want_read());
  EXPECT_FALSE(f.server.want_write());
  EXPECT_EQ(f.server.stats().resets_received, 21u);  // the 21st found the budget spent
  // Every stream the owner saw was closed exactly once (checked in the owner), none left open.
  for (auto& [id, r] : f.owner.reqs) EXPECT_TRUE(r.closed) << id;
  EXPECT_EQ(f.server.receive("more", t0).failure, Failure::Flood);  // sticky
}

TEST(H2Server, ResetsWithinTheRateAreFine) {
  Limits limits;
  limits.max_resets_per_second = 20;
  ServerFixture f(limits);
  auto t = Clock::now();
  for (int second = 0; second < 5; ++second, t += 1s) {
    ASSERT_TRUE(f.server.receive(open_and_cancel(f.client, 15), t).ok()) << second;
    f.client.receive(drain(f.server));
  }
  EXPECT_EQ(f.server.stats().resets_received, 75u);  // well over one burst, under the rate
  EXPECT_EQ(f.client.goaways, 0);
  for (auto& [id, r] : f.owner.reqs) {
    ASSERT_TRUE(r.closed) << id;
    EXPECT_EQ(r.closed->how, StreamEnd::PeerReset);
  }
}

// "MadeYouReset": requests the owner is already working on, which the session then has to reset
// because of what the peer sent (here a body shorter than its content-length), cost as much as
// a rapid reset and spend the same budget.
TEST(H2Server, StreamsResetForPeerErrorsSpendTheResetBudget) {
  Limits limits;
  limits.max_resets_per_second = 5;
  ServerFixture f(limits);
  for (int i = 0; i < 10; ++i) {
    f.client.request({{":method", "POST"},
                      {":scheme", "https"},
                      {":authority", "example.com"},
                      {":path", "/"},
                      {"content-length", "10"}},
                     std::string("12345"));
  }
  const Status st = pump(f.client, f.server);
  EXPECT_EQ(st.failure, Failure::Flood);
  EXPECT_EQ(st.reason, "rapid reset");
  EXPECT_EQ(f.client.goaway_code, uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_EQ(f.server.stats().resets_received, 0u);
  int rejected = 0;
  for (auto& [id, r] : f.owner.reqs) {
    ASSERT_TRUE(r.closed) << id;
    if (r.closed->how == StreamEnd::Rejected) {
      ++rejected;
      EXPECT_EQ(r.closed->code, ErrorCode::ProtocolError);
    }
  }
  EXPECT_EQ(rejected, 6);  // the sixth found the budget of five spent
}

TEST(H2Server, OversizedRequestHeadIsAnswered431AndTheSessionGoesOn) {
  Limits limits;
  limits.max_header_list_size = 4096;
  ServerFixture f(limits);
  Fields extra;
  for (int i = 0; i < 10; ++i) extra.emplace_back("x-big-" + std::to_string(i), pattern(500, i));
  const int32_t big = f.client.get("/big", extra);
  const int32_t big_post = f.client.request({{":method", "POST"},
                                             {":scheme", "https"},
                                             {":authority", "example.com"},
                                             {":path", "/big"},
                                             {"x-big", pattern(5000)}},
                                            std::string(1000, 'x'));
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.client.streams[big].status(), 431);
  EXPECT_TRUE(f.client.streams[big].end_stream);
  EXPECT_EQ(f.client.streams[big_post].status(), 431);
  // The body still on its way is called off without error (RFC 9113 8.1).
  EXPECT_TRUE(f.client.streams[big_post].rst_received);
  EXPECT_EQ(f.client.streams[big_post].rst_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_TRUE(f.owner.reqs.empty());
  EXPECT_EQ(f.server.stats().rejected, 2u);

  const int32_t ok = f.client.get("/small", {{"x-small", "1"}});
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_TRUE(f.owner.reqs.count(ok));
}

TEST(H2Server, ContinuationFloodIsAConnectionError) {
  RawPeer::Options o;
  o.max_send_header_block = 4 << 20;
  ServerFixture f({}, o);
  Fields extra;  // ~300 KB of incompressible fields: many more CONTINUATION frames than 8
  for (int i = 0; i < 40; ++i) extra.emplace_back("x-f" + std::to_string(i), pattern(7500, i));
  f.client.get("/", extra);
  const Status st = pump(f.client, f.server);
  EXPECT_EQ(st.failure, Failure::Flood);
  EXPECT_EQ(st.code, ErrorCode::EnhanceYourCalm);
  EXPECT_EQ(f.client.goaway_code, uint32_t{NGHTTP2_ENHANCE_YOUR_CALM});
  EXPECT_TRUE(f.owner.reqs.empty());
}

struct BadRequest {
  const char* name;
  Fields head;
  int status;  // 0: expect RST_STREAM PROTOCOL_ERROR; else this status from the session itself
};

class H2ServerBadRequest : public testing::TestWithParam<BadRequest> {};

TEST_P(H2ServerBadRequest, IsAStreamErrorThatNeverReachesTheOwner) {
  ServerFixture f;
  const int32_t id = f.client.request(GetParam().head);
  ASSERT_GT(id, 0);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  const RawPeer::Stream& s = f.client.streams[id];
  if (GetParam().status == 0) {
    EXPECT_TRUE(s.rst_received);
    EXPECT_EQ(s.rst_code, uint32_t{NGHTTP2_PROTOCOL_ERROR});
  } else {
    EXPECT_EQ(s.status(), GetParam().status);
  }
  EXPECT_TRUE(f.owner.reqs.empty());
  EXPECT_EQ(f.server.stats().rejected, 1u);
  // A stream error, not a connection error: the next request is served.
  const int32_t next = f.client.get();
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_TRUE(f.owner.reqs.count(next));
  EXPECT_EQ(f.client.goaways, 0);
}

const Fields k_base = {
    {":method", "GET"}, {":scheme", "https"}, {":authority", "example.com"}, {":path", "/"}};
Fields with(Fields f, std::string name, std::string value) {
  f.emplace_back(std::move(name), std::move(value));
  return f;
}
Fields without(Fields f, std::string_view name) {
  std::erase_if(f, [&](const auto& kv) { return kv.first == name; });
  return f;
}

INSTANTIATE_TEST_SUITE_P(
    Cases, H2ServerBadRequest,
    testing::Values(
        BadRequest{"missing_path", without(k_base, ":path"), 0},
        BadRequest{"missing_method", without(k_base, ":method"), 0},
        BadRequest{"missing_scheme", without(k_base, ":scheme"), 0},
        BadRequest{"no_authority_no_host", without(k_base, ":authority"), 0},
        BadRequest{"host_differs_from_authority", with(k_base, "host", "other.example"), 0},
        BadRequest{"duplicate_path", with(k_base, ":path", "/again"), 0},
        BadRequest{"unknown_pseudo", with(k_base, ":foo", "x"), 0},
        BadRequest{"pseudo_after_regular",
                   with(with(without(k_base, ":path"), "x-a", "1"), ":path", "/"), 0},
        BadRequest{"upper_case_name", with(k_base, "X-Upper", "1"), 0},
        BadRequest{"connection_header", with(k_base, "connection", "keep-alive"), 0},
        BadRequest{"transfer_encoding", with(k_base, "transfer-encoding", "chunked"), 0},
        BadRequest{"te_not_trailers", with(k_base, "te", "gzip"), 0},
        BadRequest{"relative_path",
                   {{":method", "GET"},
                    {":scheme", "https"},
                    {":authority", "example.com"},
                    {":path", "foo"}},
                   0},
        BadRequest{"newline_in_value", with(k_base, "x-a", "a\r\nb"), 0},
        BadRequest{"space_in_path", with(without(k_base, ":path"), ":path", "/a b"), 0},
        BadRequest{"bad_scheme", with(without(k_base, ":scheme"), ":scheme", "ht tp"), 0},
        BadRequest{"protocol_when_not_enabled",
                   {{":method", "CONNECT"},
                    {":protocol", "websocket"},
                    {":scheme", "https"},
                    {":authority", "example.com"},
                    {":path", "/chat"}},
                   0},
        BadRequest{
            "plain_connect", {{":method", "CONNECT"}, {":authority", "example.com:443"}}, 501}),
    [](const testing::TestParamInfo<BadRequest>& info) { return std::string(info.param.name); });

TEST(H2Server, ExtendedConnectForWebSocketOnlyWhenEnabled) {
  Limits limits;
  limits.enable_connect_protocol = true;
  ServerFixture f(limits);
  const Fields ws = {{":method", "CONNECT"}, {":protocol", "websocket"},
                     {":scheme", "https"},   {":authority", "example.com"},
                     {":path", "/chat"},     {"sec-websocket-version", "13"}};
  const int32_t id = f.client.request(ws, std::string("frame"));
  Fields other = ws;
  other[1].second = "webtransport";
  const int32_t other_id = f.client.request(other);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_TRUE(f.owner.reqs.count(id));
  EXPECT_EQ(f.owner.reqs[id].method, "CONNECT");
  EXPECT_EQ(f.owner.reqs[id].protocol, "websocket");
  EXPECT_EQ(f.owner.reqs[id].path, "/chat");
  EXPECT_EQ(f.owner.reqs[id].data, "frame");
  EXPECT_EQ(f.client.streams[other_id].status(), 501);
  EXPECT_FALSE(f.owner.reqs.count(other_id));
}

TEST(H2Server, EmptyDataFramesInARowAreAFlood) {
  Limits limits;
  limits.max_empty_frames = 10;
  ServerFixture f(limits);
  // A POST whose body stays open. HPACK: static :method POST, :scheme https, :path /, then
  // :authority as a literal without indexing (the raw client's encoder state is untouched).
  const std::string hb = "\x83\x87\x84\x01\x0b"s + "example.com";
  const int32_t sid = 101;
  std::string bytes = frame(NGHTTP2_HEADERS, NGHTTP2_FLAG_END_HEADERS, sid, hb);
  for (int i = 0; i < 10; ++i) bytes += frame(NGHTTP2_DATA, 0, sid, "");
  bytes += frame(NGHTTP2_DATA, 0, sid, "payload");  // resets the count
  for (int i = 0; i < 10; ++i) bytes += frame(NGHTTP2_DATA, 0, sid, "");
  ASSERT_TRUE(f.server.receive(bytes).ok());
  EXPECT_EQ(f.owner.reqs[sid].data, "payload");
  const Status st = f.server.receive(frame(NGHTTP2_DATA, 0, sid, ""));  // the 11th in a row
  EXPECT_EQ(st.failure, Failure::Flood);
  EXPECT_EQ(st.code, ErrorCode::EnhanceYourCalm);
  EXPECT_EQ(st.reason, "empty frame flood");
}

TEST(H2Server, ControlFramesPilingUpUnsentAreAFlood) {
  {  // Many SETTINGS in one read, each owing an ACK: nghttp2's max_outbound_ack.
    Limits limits;
    limits.max_outbound_acks = 50;
    ServerFixture f(limits);
    std::string bytes;
    for (int i = 0; i < 60; ++i) bytes += frame(NGHTTP2_SETTINGS, 0, 0, "");
    const Status st = f.server.receive(bytes);
    EXPECT_EQ(st.failure, Failure::Flood);
    EXPECT_EQ(st.code, ErrorCode::EnhanceYourCalm);
  }
  {  // PINGs over many reads while the owner never takes the output: our backlog bound.
    Limits limits;
    limits.max_output_backlog = 1000;
    ServerFixture f(limits);
    const std::string ping = frame(NGHTTP2_PING, 0, 0, "12345678");
    Status st;
    int sent = 0;
    while (st.ok() && sent < 200) st = f.server.receive(ping), ++sent;
    EXPECT_EQ(st.failure, Failure::Flood);
    EXPECT_EQ(st.reason, "output not drained");
    EXPECT_LE(sent, 1000 / 17 + 1);  // each PING ACK is 17 bytes
  }
  {  // The same PINGs are fine when the output is drained.
    Limits limits;
    limits.max_output_backlog = 1000;
    ServerFixture f(limits);
    const std::string ping = frame(NGHTTP2_PING, 0, 0, "12345678");
    for (int i = 0; i < 200; ++i) {
      ASSERT_TRUE(f.server.receive(ping).ok());
      EXPECT_EQ(drain(f.server).size(), 17u);
    }
  }
  {  // A SETTINGS frame with more entries than max_settings_entries.
    Limits limits;
    limits.max_settings_entries = 8;
    ServerFixture f(limits);
    std::string entries;
    for (int i = 0; i < 9; ++i) entries += "\x00\x03\x00\x00\x00\x64"s;
    const Status st = f.server.receive(frame(NGHTTP2_SETTINGS, 0, 0, entries));
    EXPECT_FALSE(st.ok());
    EXPECT_EQ(st.code, ErrorCode::EnhanceYourCalm);
  }
}

TEST(H2Server, ProtocolErrorsAreReportedByReceive) {
  ServerFixture f;
  const Status st = f.server.receive(frame(NGHTTP2_DATA, 0, 0, "xx"));  // DATA on stream 0
  EXPECT_EQ(st.failure, Failure::Protocol);
  EXPECT_EQ(st.code, ErrorCode::ProtocolError);
  f.client.receive(drain(f.server));
  EXPECT_EQ(f.client.goaway_code, uint32_t{NGHTTP2_PROTOCOL_ERROR});
  EXPECT_FALSE(f.server.want_read());
  EXPECT_FALSE(f.server.want_write());

  ServerOwner owner;
  ServerSession server({}, owner);
  const Status bad = server.receive("GET / HTTP/1.1\r\nHost: x\r\n\r\n"sv);
  EXPECT_EQ(bad.failure, Failure::Protocol);
  EXPECT_EQ(bad.reason, "bad connection preface");
}

// ---------------------------------------------------------------------------------------------
// Server: ending streams and the session.

TEST(H2Server, OwnerResetAndPeerResetAreToldApart) {
  ServerFixture f;
  const int32_t a = f.client.get("/a");
  const int32_t b = f.client.get("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  f.server.reset_stream(a, ErrorCode::RefusedStream);
  nghttp2_submit_rst_stream(f.client.s, NGHTTP2_FLAG_NONE, b, NGHTTP2_CANCEL);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.client.streams[a].rst_code, uint32_t{NGHTTP2_REFUSED_STREAM});
  ASSERT_TRUE(f.owner.reqs[a].closed);
  EXPECT_EQ(f.owner.reqs[a].closed->how, StreamEnd::LocalReset);
  ASSERT_TRUE(f.owner.reqs[b].closed);
  EXPECT_EQ(f.owner.reqs[b].closed->how, StreamEnd::PeerReset);
  EXPECT_EQ(f.owner.reqs[b].closed->code, ErrorCode::Cancel);
  EXPECT_EQ(f.server.submit_response(a, 200, k_no_headers, Body::None), Submit::Closed);
  EXPECT_EQ(f.server.submit_response(b, 200, k_no_headers, Body::None), Submit::Closed);
}

TEST(H2Server, GracefulShutdownLetsStreamsInFlightComplete) {
  ServerFixture f;
  const int32_t a = f.client.get("/a");
  const int32_t b = f.client.get("/b");
  ASSERT_TRUE(pump(f.client, f.server).ok());

  f.server.shutdown();
  const std::string notice = drain(f.server);  // GOAWAY(2^31-1) + PING
  // A request the client sent before the notice reached it: it must still be served.
  const int32_t c = f.client.get("/c");
  ASSERT_TRUE(f.server.receive(f.client.output()).ok());
  f.client.receive(notice);
  EXPECT_EQ(f.client.goaway_last, int32_t{0x7fffffff});
  ASSERT_TRUE(pump(f.client, f.server).ok());  // the PING ACK brings the final GOAWAY
  EXPECT_EQ(f.client.goaways, 2);
  EXPECT_EQ(f.client.goaway_last, c);
  EXPECT_EQ(f.client.goaway_code, uint32_t{NGHTTP2_NO_ERROR});
  EXPECT_EQ(f.owner.order, (std::vector<StreamId>{a, b, c}));
  EXPECT_TRUE(f.server.want_read());  // streams still open

  for (StreamId id : {a, b, c}) {
    ASSERT_EQ(f.server.submit_response(id, 200, k_no_headers, Body::Follows), Submit::Ok);
    f.server.submit_data(id, "done", EndStream::Yes);
  }
  ASSERT_TRUE(pump(f.client, f.server).ok());
  for (StreamId id : {a, b, c}) {
    EXPECT_EQ(f.client.streams[id].body, "done");
    ASSERT_TRUE(f.owner.reqs[id].closed);
    EXPECT_EQ(f.owner.reqs[id].closed->how, StreamEnd::Complete);
  }
  EXPECT_TRUE(f.server.status().ok());
  EXPECT_FALSE(f.server.want_read());  // nothing left: the owner closes the connection
  EXPECT_FALSE(f.server.want_write());
}

// Terminates first, then reads every view of the request (ASan would see a freed stream).
struct TerminatingOwner : ServerOwner {
  void on_request(StreamId id, const Request& r, Body body) override {
    session->terminate(ErrorCode::InternalError);
    ServerOwner::on_request(id, r, body);
  }
};

TEST(H2Server, OwnerMayTerminateFromInsideAnEvent) {
  RawPeer client(RawPeer::Kind::Client);
  TerminatingOwner owner;
  ServerSession server({}, owner);
  owner.session = &server;
  for (int i = 0; i < 3; ++i) client.get("/p" + std::to_string(i), {{"x-a", "1"}});
  EXPECT_TRUE(pump(client, server).ok());
  ASSERT_EQ(owner.order.size(), 1u);  // the rest of the input was not processed
  const ServerOwner::Req& r = owner.reqs[owner.order[0]];
  EXPECT_EQ(r.path, "/p0");
  EXPECT_EQ(r.headers, (Fields{{"x-a", "1"}}));
  EXPECT_FALSE(r.ended);  // no event after the session ended, not even its END_STREAM
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::SessionEnded);
  EXPECT_EQ(client.goaway_code, uint32_t{NGHTTP2_INTERNAL_ERROR});
  EXPECT_FALSE(server.want_read());
}

// Found by tests/fuzz/h2_session_fuzz.cpp: pending_output() called from an event handed out the
// frames an earlier receive() had serialised, which the owner (told "nothing there") dropped.
TEST(H2Server, PendingOutputFromInsideAnEventDoesNothing) {
  ServerFixture f;
  const std::string ping = frame(NGHTTP2_PING, 0, 0, "12345678");
  ASSERT_TRUE(f.server.receive(ping).ok());  // its ACK waits for the owner
  std::string inside;
  f.owner.when_request = [&](StreamId) { f.server.pending_output(inside); };
  f.client.get();
  ASSERT_TRUE(f.server.receive(f.client.output()).ok());
  ASSERT_EQ(f.owner.order.size(), 1u);
  EXPECT_TRUE(inside.empty());
  EXPECT_TRUE(drain(f.server).starts_with(frame(NGHTTP2_PING, NGHTTP2_FLAG_ACK, 0, "12345678")));
}

TEST(H2Server, PendingOutputComesInChunks) {
  Limits limits;
  limits.output_chunk = 4096;
  ServerFixture f(limits);
  const int32_t id = f.client.get();
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_EQ(f.server.submit_response(id, 200, k_no_headers, Body::Follows), Submit::Ok);
  f.server.submit_data(id, pattern(60000), EndStream::Yes);
  std::string out;
  f.server.pending_output(out);
  EXPECT_GE(out.size(), 4096u);
  EXPECT_LE(out.size(), 4096u + 9 + 16384);  // may finish the frame it started
  EXPECT_TRUE(f.server.want_write());
  f.client.receive(out);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  EXPECT_EQ(f.client.streams[id].body.size(), 60000u);
}

TEST(H2Server, TerminateEndsEveryOpenStream) {
  ServerFixture f;
  const int32_t a = f.client.get("/a");
  ASSERT_TRUE(pump(f.client, f.server).ok());
  f.server.terminate(ErrorCode::NoError);
  ASSERT_TRUE(f.owner.reqs[a].closed);
  EXPECT_EQ(f.owner.reqs[a].closed->how, StreamEnd::SessionEnded);
  f.client.receive(drain(f.server));
  EXPECT_EQ(f.client.goaways, 1);
  EXPECT_FALSE(f.server.want_read());
  EXPECT_FALSE(f.server.want_write());
  EXPECT_TRUE(f.server.status().ok());  // the owner's choice, not a failure
}

// ---------------------------------------------------------------------------------------------
// Client session.

struct ClientFixture {
  explicit ClientFixture(Limits limits = {})
      : client(limits, owner), server(RawPeer::Kind::Server) {
    owner.session = &client;
    EXPECT_TRUE(pump(client, server).ok());
  }
  ClientOwner owner;
  ClientSession client;
  RawPeer server;
};

TEST(H2Client, RequestGoesOutAsHttp2AndTheResponseComesBackWithTrailers) {
  ClientFixture f;
  f.server.on_end = [](RawPeer& p, int32_t id) {
    p.respond(id, {{":status", "200"}, {"content-type", "application/grpc"}}, std::string("reply"),
              {{"grpc-status", "0"}});
  };
  const std::vector<Header> headers = {{"Host", "ignored.example"},
                                       {"Connection", "close"},
                                       {"TE", "trailers"},
                                       {"Content-Type", "application/grpc"},
                                       {"X-Trace", "t1"}};
  const auto opened = f.client.submit_request(
      {"POST", "http", "grpc.local", "/pkg.Svc/Call", "", headers}, Body::Follows);
  ASSERT_EQ(opened.result, Submit::Ok);
  const StreamId id = opened.stream;
  EXPECT_EQ(f.client.submit_data(id, "request", EndStream::Yes), Send::Ready);
  ASSERT_TRUE(pump(f.client, f.server).ok());

  const RawPeer::Stream& seen = f.server.streams[id];
  EXPECT_EQ(seen.head(), (Fields{{":method", "POST"},
                                 {":scheme", "http"},
                                 {":authority", "grpc.local"},
                                 {":path", "/pkg.Svc/Call"},
                                 {"te", "trailers"},
                                 {"content-type", "application/grpc"},
                                 {"x-trace", "t1"}}));
  EXPECT_EQ(seen.body, "request");

  const ClientOwner::Resp& r = f.owner.resps[id];
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.headers, (Fields{{"content-type", "application/grpc"}}));
  EXPECT_EQ(r.body, Body::Follows);
  EXPECT_EQ(r.data, "reply");
  EXPECT_EQ(r.trailers, (Fields{{"grpc-status", "0"}}));
  EXPECT_TRUE(r.ended);
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::Complete);
}

// Found by tests/fuzz/h2_session_fuzz.cpp: a stream whose last frame was being processed when the
// owner terminated the session from an event was closed as Complete (without on_end_stream)
// instead of SessionEnded like every other open stream.
struct TerminatingOnTrailers : ClientOwner {
  void on_trailers(StreamId id, std::span<const Header> fields) override {
    ClientOwner::on_trailers(id, fields);
    session->terminate(ErrorCode::Cancel);
  }
};

TEST(H2Client, TerminateFromAnEventEndsEvenTheStreamBeingCompleted) {
  TerminatingOnTrailers owner;
  ClientSession client({}, owner);
  owner.session = &client;
  RawPeer server(RawPeer::Kind::Server);
  server.on_end = [](RawPeer& p, int32_t id) {
    p.respond(id, {{":status", "200"}}, std::string("reply"), {{"grpc-status", "0"}});
  };
  const auto opened = client.submit_request({"GET", "http", "a.local", "/", "", {}}, Body::None);
  ASSERT_EQ(opened.result, Submit::Ok);
  pump(client, server);
  const ClientOwner::Resp& r = owner.resps[opened.stream];
  EXPECT_EQ(r.trailers, (Fields{{"grpc-status", "0"}}));
  EXPECT_FALSE(r.ended);
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::SessionEnded);
  EXPECT_EQ(r.closed->code, ErrorCode::Cancel);
  EXPECT_FALSE(client.want_read());
}

TEST(H2Client, InterimResponsesAreSkipped) {
  ClientFixture f;
  f.server.on_end = [](RawPeer& p, int32_t id) {
    nghttp2_nv early = {reinterpret_cast<uint8_t*>(const_cast<char*>(":status")),
                        reinterpret_cast<uint8_t*>(const_cast<char*>("103")), 7, 3,
                        NGHTTP2_NV_FLAG_NONE};
    nghttp2_submit_headers(p.s, NGHTTP2_FLAG_NONE, id, nullptr, &early, 1, nullptr);
    p.respond(id, {{":status", "204"}});
  };
  const auto opened =
      f.client.submit_request({"GET", "https", "a.example", "/", "", {}}, Body::None);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  const ClientOwner::Resp& r = f.owner.resps[opened.stream];
  EXPECT_EQ(r.heads, 1);
  EXPECT_EQ(r.status, 204);
  EXPECT_EQ(r.body, Body::None);
  EXPECT_TRUE(r.ended);
}

TEST(H2Client, GoawayRefusesStreamsAboveTheLastIdSoTheyCanBeRetried) {
  ClientFixture f;
  std::vector<StreamId> ids;
  for (int i = 0; i < 3; ++i) {
    ids.push_back(
        f.client.submit_request({"GET", "https", "a.example", "/", "", {}}, Body::None).stream);
  }
  ASSERT_TRUE(pump(f.client, f.server).ok());
  ASSERT_EQ(f.server.ended.size(), 3u);
  nghttp2_submit_goaway(f.server.s, NGHTTP2_FLAG_NONE, ids[0], NGHTTP2_NO_ERROR, nullptr, 0);
  f.server.respond(ids[0], {{":status", "200"}});
  ASSERT_TRUE(pump(f.client, f.server).ok());

  EXPECT_EQ(f.owner.goaways,
            (std::vector<std::pair<StreamId, ErrorCode>>{{ids[0], ErrorCode::NoError}}));
  EXPECT_EQ(f.owner.resps[ids[0]].status, 200);
  EXPECT_EQ(f.owner.resps[ids[0]].closed->how, StreamEnd::Complete);
  for (int i = 1; i < 3; ++i) {
    ASSERT_TRUE(f.owner.resps[ids[i]].closed);
    EXPECT_EQ(f.owner.resps[ids[i]].closed->how, StreamEnd::PeerReset);
    EXPECT_EQ(f.owner.resps[ids[i]].closed->code, ErrorCode::RefusedStream);
  }
  EXPECT_FALSE(f.client.accepting_streams());
  EXPECT_EQ(f.client.submit_request({"GET", "https", "a.example", "/", "", {}}, Body::None).result,
            Submit::Closed);
}

TEST(H2Client, OversizedResponseHeadIsRejected) {
  Limits limits;
  limits.max_header_list_size = 1024;
  ClientFixture f(limits);
  f.server.on_end = [](RawPeer& p, int32_t id) {
    p.respond(id, {{":status", "200"}, {"x-big", pattern(2000)}}, std::string("body"));
  };
  const auto opened =
      f.client.submit_request({"GET", "https", "a.example", "/", "", {}}, Body::None);
  ASSERT_TRUE(pump(f.client, f.server).ok());
  const ClientOwner::Resp& r = f.owner.resps[opened.stream];
  EXPECT_EQ(r.heads, 0);
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::Rejected);
  EXPECT_TRUE(f.server.streams[opened.stream].rst_received);
}

TEST(H2Client, InvalidRequestsAreNotSent) {
  ClientFixture f;
  EXPECT_EQ(f.client.submit_request({"GET", "https", "", "/", "", {}}, Body::None).result,
            Submit::Invalid);
  EXPECT_EQ(f.client.submit_request({"CONNECT", "https", "a:443", "/", "", {}}, Body::None).result,
            Submit::Invalid);
  EXPECT_EQ(f.client.submit_request({"GET", "https", "a", "/", "websocket", {}}, Body::None).result,
            Submit::Invalid);
}

// Both of ours, end to end: a streaming upload echoed back as it arrives, then trailers. The
// server consumes a request chunk only once its echo was accepted, so the upload is paced by
// the download: backpressure through the whole chain.
TEST(H2Session, ClientAndServerStreamABodyBothWaysWithBackpressure) {
  Limits limits;
  limits.stream_buffer = 16384;
  limits.initial_window = 32768;
  ServerOwner s_owner;
  ServerSession server(limits, s_owner);
  s_owner.session = &server;
  s_owner.auto_consume = false;
  ClientOwner c_owner;
  ClientSession client(limits, c_owner);
  c_owner.session = &client;

  std::string pending;  // request bytes not yet echoed
  bool trailers_sent = false;
  int echo_fulls = 0;
  auto echo = [&](StreamId id) {
    while (!pending.empty()) {
      const size_t n = std::min<size_t>(pending.size(), 8192);
      const Send s = server.submit_data(id, std::string_view(pending).substr(0, n), EndStream::No);
      if (s == Send::Blocked || s == Send::Closed) return;
      server.consume(id, n);
      pending.erase(0, n);
      if (s == Send::Full) {
        ++echo_fulls;
        return;
      }
    }
    if (s_owner.reqs[id].ended && !trailers_sent) {
      const std::vector<Header> t = {{"grpc-status", "0"}};
      EXPECT_EQ(server.submit_trailers(id, t), Submit::Ok);
      trailers_sent = true;
    }
  };
  s_owner.when_request = [&](StreamId id) {
    const std::vector<Header> head = {{"content-type", "application/grpc"}};
    EXPECT_EQ(server.submit_response(id, 200, head, Body::Follows), Submit::Ok);
  };
  s_owner.when_data = [&](StreamId id, std::string_view data) {
    pending += data;
    echo(id);
  };
  s_owner.when_ready = echo;
  s_owner.when_ended = echo;

  const std::string body = pattern(300000, 3);
  const auto opened =
      client.submit_request({"POST", "http", "svc", "/echo", "", {}}, Body::Follows);
  ASSERT_EQ(opened.result, Submit::Ok);
  const StreamId id = opened.stream;
  size_t offered = 0;
  int upload_fulls = 0;
  auto upload = [&](StreamId) {
    while (offered < body.size()) {
      const size_t n = std::min<size_t>(10000, body.size() - offered);
      const bool last = offered + n == body.size();
      const Send s = client.submit_data(id, std::string_view(body).substr(offered, n),
                                        last ? EndStream::Yes : EndStream::No);
      if (s == Send::Blocked) return;
      ASSERT_NE(s, Send::Closed);
      offered += n;
      if (s == Send::Full) {
        ++upload_fulls;
        return;
      }
    }
  };
  c_owner.when_ready = upload;
  upload(id);
  pump(client, server);

  const ClientOwner::Resp& r = c_owner.resps[id];
  EXPECT_GT(upload_fulls, 0) << "the upload never met backpressure";
  EXPECT_GT(echo_fulls, 0) << "the echo never met backpressure";
  EXPECT_EQ(offered, body.size());
  EXPECT_EQ(r.status, 200);
  EXPECT_EQ(r.data.size(), body.size());
  EXPECT_TRUE(r.data == body);
  EXPECT_EQ(r.trailers, (Fields{{"grpc-status", "0"}}));
  ASSERT_TRUE(r.closed);
  EXPECT_EQ(r.closed->how, StreamEnd::Complete);
  ASSERT_TRUE(s_owner.reqs[id].closed);
  EXPECT_EQ(s_owner.reqs[id].closed->how, StreamEnd::Complete);
}

}  // namespace
}  // namespace sluice::http::h2
