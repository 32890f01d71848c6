// The traffic router as a Triton backend (libtriton_tritonoperator_router.so): the same choices as the
// python router (router_model.py, the reference: pin, sticky key by weighted rendezvous hashing on
// blake2b, otherwise smooth weighted round robin; the same per-variant counters), made in-process.
//
// Why C++: the python router costs a round trip to its stub process per batch, another per BLS call
// and python work per request, and blocks its instance until the call returns, so the target's
// batcher saw one router batch at a time (0.36-0.7x of direct throughput, +0.4-0.5 ms p50 at one
// client; README, "Rolling out a new version"). Here `execute` forwards each request with
// TRITONSERVER_ServerInferAsync and returns; the response callback copies the target's outputs into
// the client's response. No thread, no copy of the inputs (the target reads the client's buffers,
// which live until both the forwarded request is released and its final response is sent).
//
// The operator sends the built library with the router's load call (render/router.py); Triton finds
// `libtriton_<backend>.so` in the model's version folder first. .ci/build-router.sh builds it
// against the Triton core headers (API 1.16; Triton 2.51 serves 1.19).
#include <atomic>
#include <cctype>
#include <chrono>
#include <cmath>
#include <cstdint>
#include <cstdlib>
#include <cstring>
#include <map>
#include <memory>
#include <mutex>
#include <regex>
#include <stdexcept>
#include <string>
#include <utility>
#include <vector>

#include "triton/core/tritonbackend.h"
#include "triton/core/tritonserver.h"

namespace {

constexpr const char* kMetricFamily = "tritonoperator_router_requests_total";

// ---- a small JSON reader: just what the model config needs ----------------------------------------
struct Json {
  enum Kind { kNull, kBool, kNumber, kString, kArray, kObject } kind = kNull;
  std::string text;  // a string's value, or a number's or a bool's spelling
  std::vector<Json> items;
  std::vector<std::pair<std::string, Json>> fields;

  const Json* Get(const std::string& key) const {
    for (const auto& field : fields) {
      if (field.first == key) return &field.second;
    }
    return nullptr;
  }
};

class JsonReader {
 public:
  explicit JsonReader(const std::string& text) : s_(text) {}
  Json Read() {
    Json value = Value();
    Space();
    if (at_ != s_.size()) throw std::runtime_error("trailing characters in JSON");
    return value;
  }

 private:
  void Space() {
    while (at_ < s_.size() && std::isspace(static_cast<unsigned char>(s_[at_]))) ++at_;
  }
  char Next() {
    if (at_ >= s_.size()) throw std::runtime_error("truncated JSON");
    return s_[at_++];
  }
  void Expect(char c) {
    Space();
    if (Next() != c) throw std::runtime_error(std::string("JSON: expected '") + c + "'");
  }
  std::string String() {
    Expect('"');
    std::string out;
    for (char c = Next(); c != '"'; c = Next()) {
      if (c != '\\') {
        out += c;
        continue;
      }
      char e = Next();
      switch (e) {
        case 'n': out += '\n'; break;
        case 't': out += '\t'; break;
        case 'r': out += '\r'; break;
        case 'b': out += '\b'; break;
        case 'f': out += '\f'; break;
        case 'u': {
          unsigned code = std::stoul(s_.substr(at_, 4), nullptr, 16);
          at_ += 4;
          if (code < 0x80) {
            out += static_cast<char>(code);
          } else if (code < 0x800) {
            out += static_cast<char>(0xC0 | (code >> 6));
            out += static_cast<char>(0x80 | (code & 0x3F));
          } else {
            out += static_cast<char>(0xE0 | (code >> 12));
            out += static_cast<char>(0x80 | ((code >> 6) & 0x3F));
            out += static_cast<char>(0x80 | (code & 0x3F));
          }
          break;
        }
        default: out += e;  // \" \\ \/
      }
    }
    return out;
  }
  Json Value() {
    Space();
    Json v;
    if (at_ >= s_.size()) throw std::runtime_error("truncated JSON");
    char c = s_[at_];
    if (c == '{') {
      v.kind = Json::kObject;
      ++at_;
      Space();
      if (at_ < s_.size() && s_[at_] == '}') {
        ++at_;
        return v;
      }
      while (true) {
        std::string key = String();
        Expect(':');
        v.fields.emplace_back(key, Value());
        Space();
        char d = Next();
        if (d == '}') return v;
        if (d != ',') throw std::runtime_error("JSON: expected ',' or '}'");
      }
    }
    if (c == '[') {
      v.kind = Json::kArray;
      ++at_;
      Space();
      if (at_ < s_.size() && s_[at_] == ']') {
        ++at_;
        return v;
      }
      while (true) {
        v.items.push_back(Value());
        Space();
        char d = Next();
        if (d == ']') return v;
        if (d != ',') throw std::runtime_error("JSON: expected ',' or ']'");
      }
    }
    if (c == '"') {
      v.kind = Json::kString;
      v.text = String();
      return v;
    }
    size_t start = at_;
    while (at_ < s_.size() && std::strchr(",}] \t\r\n", s_[at_]) == nullptr) ++at_;
    v.text = s_.substr(start, at_ - start);
    v.kind = v.text == "null" ? Json::kNull
             : (v.text == "true" || v.text == "false") ? Json::kBool
                                                        : Json::kNumber;
    return v;
  }

  const std::string& s_;
  size_t at_ = 0;
};

// ---- blake2b with an 8-byte digest (RFC 7693), for sticky keys as hashlib.blake2b computes them ----
class Blake2b8 {
 public:
  static uint64_t Digest(const std::string& data) {
    uint64_t h[8];
    for (int i = 0; i < 8; ++i) h[i] = kIv[i];
    h[0] ^= 0x01010000ULL ^ 8ULL;  // no key, 8-byte digest
    size_t n = data.size(), done = 0;
    uint8_t block[128];
    do {
      size_t take = n - done > 128 ? 128 : n - done;
      bool last = done + take == n;
      std::memset(block, 0, sizeof(block));
      if (take) std::memcpy(block, data.data() + done, take);
      done += take;
      Compress(h, block, done, last);
      if (last) break;
    } while (true);
    // The digest is h[0]'s 8 bytes, little-endian; python reads them big-endian.
    uint64_t out = 0;
    for (int i = 0; i < 8; ++i) out = (out << 8) | ((h[0] >> (8 * i)) & 0xFF);
    return out;
  }

 private:
  static constexpr uint64_t kIv[8] = {
      0x6a09e667f3bcc908ULL, 0xbb67ae8584caa73bULL, 0x3c6ef372fe94f82bULL, 0xa54ff53a5f1d36f1ULL,
      0x510e527fade682d1ULL, 0x9b05688c2b3e6c1fULL, 0x1f83d9abfb41bd6bULL, 0x5be0cd19137e2179ULL};
  static constexpr uint8_t kSigma[12][16] = {
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
      {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3},
      {11, 8, 12, 0, 5, 2, 15, 13, 10, 14, 3, 6, 7, 1, 9, 4},
      {7, 9, 3, 1, 13, 12, 11, 14, 2, 6, 5, 10, 4, 0, 15, 8},
      {9, 0, 5, 7, 2, 4, 10, 15, 14, 1, 11, 12, 6, 8, 3, 13},
      {2, 12, 6, 10, 0, 11, 8, 3, 4, 13, 7, 5, 15, 14, 1, 9},
      {12, 5, 1, 15, 14, 13, 4, 10, 0, 7, 6, 3, 9, 2, 8, 11},
      {13, 11, 7, 14, 12, 1, 3, 9, 5, 0, 15, 4, 8, 6, 2, 10},
      {6, 15, 14, 9, 11, 3, 0, 8, 12, 2, 13, 7, 1, 4, 10, 5},
      {10, 2, 8, 4, 7, 6, 1, 5, 15, 11, 9, 14, 3, 12, 13, 0},
      {0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15},
      {14, 10, 4, 8, 9, 15, 13, 6, 1, 12, 0, 2, 11, 7, 5, 3}};

  static uint64_t Rotr(uint64_t x, int n) { return (x >> n) | (x << (64 - n)); }
  static void G(uint64_t* v, int a, int b, int c, int d, uint64_t x, uint64_t y) {
    v[a] = v[a] + v[b] + x;
    v[d] = Rotr(v[d] ^ v[a], 32);
    v[c] = v[c] + v[d];
    v[b] = Rotr(v[b] ^ v[c], 24);
    v[a] = v[a] + v[b] + y;
    v[d] = Rotr(v[d] ^ v[a], 16);
    v[c] = v[c] + v[d];
    v[b] = Rotr(v[b] ^ v[c], 63);
  }
  static void Compress(uint64_t* h, const uint8_t* block, uint64_t count, bool last) {
    uint64_t m[16], v[16];
    for (int i = 0; i < 16; ++i) {
      m[i] = 0;
      for (int j = 7; j >= 0; --j) m[i] = (m[i] << 8) | block[8 * i + j];
    }
    for (int i = 0; i < 8; ++i) {
      v[i] = h[i];
      v[i + 8] = kIv[i];
    }
    v[12] ^= count;  // messages here are far shorter than 2^64 bytes
    if (last) v[14] = ~v[14];
    for (const auto& s : kSigma) {
      G(v, 0, 4, 8, 12, m[s[0]], m[s[1]]);
      G(v, 1, 5, 9, 13, m[s[2]], m[s[3]]);
      G(v, 2, 6, 10, 14, m[s[4]], m[s[5]]);
      G(v, 3, 7, 11, 15, m[s[6]], m[s[7]]);
      G(v, 0, 5, 10, 15, m[s[8]], m[s[9]]);
      G(v, 1, 6, 11, 12, m[s[10]], m[s[11]]);
      G(v, 2, 7, 8, 13, m[s[12]], m[s[13]]);
      G(v, 3, 4, 9, 14, m[s[14]], m[s[15]]);
    }
    for (int i = 0; i < 8; ++i) h[i] ^= v[i] ^ v[i + 8];
  }
};
constexpr uint64_t Blake2b8::kIv[8];
constexpr uint8_t Blake2b8::kSigma[12][16];

// ---- the choice (router_model.py's Router) ---------------------------------------------------------
struct Variant {
  std::string model;
  int64_t version;
  int64_t weight;
  std::string label;  // "model:version"
};

std::string Lower(std::string s) {
  for (auto& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

std::string Strip(const std::string& s) {
  size_t a = 0, b = s.size();
  while (a < b && std::isspace(static_cast<unsigned char>(s[a]))) ++a;
  while (b > a && std::isspace(static_cast<unsigned char>(s[b - 1]))) --b;
  return s.substr(a, b - a);
}

class Router {
 public:
  Router(std::vector<Variant> variants, std::string sticky_key, std::string pin_key)
      : variants_(std::move(variants)), sticky_key_(Lower(sticky_key)), pin_key_(Lower(pin_key)),
        current_(variants_.size(), 0) {
    for (const auto& v : variants_) total_ += v.weight;
  }
  const std::vector<Variant>& variants() const { return variants_; }

  // params: (lower-cased name, value) of the request's parameters, in order.
  size_t Choose(const std::vector<std::pair<std::string, std::string>>& params) {
    std::string pin = Parameter(params, pin_key_);
    if (!pin.empty()) {
      for (size_t i = 0; i < variants_.size(); ++i) {
        const Variant& v = variants_[i];
        if (pin == v.label || pin == std::to_string(v.version) || pin == v.model) return i;
      }
    }
    std::string key = Parameter(params, sticky_key_);
    if (!key.empty()) return Sticky(key);
    std::lock_guard<std::mutex> lock(mu_);
    return Pick();
  }

 private:
  static std::string Parameter(
      const std::vector<std::pair<std::string, std::string>>& params, const std::string& name) {
    if (name.empty()) return "";
    for (const auto& p : params) {
      if (p.first == name && !p.second.empty()) return Strip(p.second);
    }
    return "";
  }
  size_t Sticky(const std::string& key) const {
    long best = -1;
    double best_score = -1.0;
    for (size_t i = 0; i < variants_.size(); ++i) {
      if (variants_[i].weight <= 0) continue;
      std::string salted = variants_[i].label;
      salted.push_back('\0');
      salted += key;
      double unit = (static_cast<double>(Blake2b8::Digest(salted)) + 0.5) / 18446744073709551616.0;
      double score = static_cast<double>(variants_[i].weight) / -std::log(unit);
      if (score > best_score) {
        best = static_cast<long>(i);
        best_score = score;
      }
    }
    return static_cast<size_t>(best);
  }
  size_t Pick() {  // nginx's smooth weighted round robin
    long best = -1;
    for (size_t i = 0; i < variants_.size(); ++i) {
      if (variants_[i].weight <= 0) continue;
      current_[i] += variants_[i].weight;
      if (best < 0 || current_[i] > current_[best]) best = static_cast<long>(i);
    }
    current_[best] -= total_;
    return static_cast<size_t>(best);
  }

  std::vector<Variant> variants_;
  std::string sticky_key_, pin_key_;
  std::vector<int64_t> current_;
  int64_t total_ = 0;
  std::mutex mu_;
};

// An error message as a direct call gives it: no python traceback, no server file paths.
std::string CleanMessage(const std::string& message) {
  static const std::regex traceback(R"(\s*\n\s*At:\s*\n)");
  static const std::regex path(R"((?:/[\w.+@-]+)+/([\w.+@-]+))");
  std::smatch found;
  std::string head = std::regex_search(message, found, traceback) ? message.substr(0, found.position(0))
                                                                   : message;
  return Strip(std::regex_replace(head, path, "$1"));
}

int64_t ToInt(const Json* value, const char* what) {
  if (value == nullptr || (value->kind != Json::kString && value->kind != Json::kNumber)) {
    throw std::runtime_error(std::string("router: a variant lacks its ") + what);
  }
  return std::stoll(value->text);
}

std::vector<Variant> ParseVariants(const std::string& raw) {
  Json items = JsonReader(raw).Read();
  if (items.kind != Json::kArray || items.items.empty()) {
    throw std::runtime_error("router: parameter 'variants' must be a non-empty JSON list");
  }
  std::vector<Variant> variants;
  int64_t total = 0;
  for (const auto& item : items.items) {
    const Json* model = item.Get("model");
    if (model == nullptr || model->kind != Json::kString) throw std::runtime_error("router: a variant lacks its model");
    Variant v{model->text, ToInt(item.Get("version"), "version"), ToInt(item.Get("weight"), "weight"), ""};
    v.label = v.model + ":" + std::to_string(v.version);
    if (v.weight < 0) throw std::runtime_error("router: weights must be >= 0 with a positive total");
    for (const auto& other : variants) {
      if (other.label == v.label) throw std::runtime_error("router: a variant is listed twice");
    }
    total += v.weight;
    variants.push_back(v);
  }
  if (total <= 0) throw std::runtime_error("router: weights must be >= 0 with a positive total");
  return variants;
}

std::string ConfigString(const Json& config, const char* key) {
  const Json* params = config.Get("parameters");
  const Json* entry = params ? params->Get(key) : nullptr;
  const Json* value = entry ? entry->Get("string_value") : nullptr;
  return value && value->kind == Json::kString ? value->text : "";
}

uint64_t NowNs() {
  return std::chrono::duration_cast<std::chrono::nanoseconds>(
             std::chrono::steady_clock::now().time_since_epoch())
      .count();
}

// ---- the model ---------------------------------------------------------------------------------------
class RouterModel {
 public:
  RouterModel(TRITONBACKEND_Model* model, std::unique_ptr<Router> router, std::string name)
      : router_(std::move(router)), name_(std::move(name)) {
    TRITONBACKEND_ModelServer(model, &server_);
    TRITONSERVER_ResponseAllocatorNew(&allocator_, Allocate, Free, nullptr);
    TRITONSERVER_MetricFamilyNew(
        &family_, TRITONSERVER_METRIC_KIND_COUNTER, kMetricFamily,
        "Requests a traffic router forwarded, by variant (model, version) and outcome.");
    metrics_.resize(router_->variants().size() * 2, nullptr);
  }
  // The counters outlive the model on purpose: a reloaded router (new weights) counts on in the same
  // Prometheus counters (Triton hands every family of one name the same counter for the same labels),
  // and deleting ours would remove that shared counter under the new router (and reset what the
  // analysis reads). What stays is a few small objects per load.
  ~RouterModel() { TRITONSERVER_ResponseAllocatorDelete(allocator_); }
  Router& router() { return *router_; }
  TRITONSERVER_Server* server() const { return server_; }
  TRITONSERVER_ResponseAllocator* allocator() const { return allocator_; }

  void Count(size_t chosen, bool failed) {
    if (family_ == nullptr) return;
    size_t slot = chosen * 2 + (failed ? 1 : 0);
    TRITONSERVER_Metric* metric;
    {
      std::lock_guard<std::mutex> lock(mu_);
      metric = metrics_[slot];
      if (metric == nullptr) {
        const Variant& v = router_->variants()[chosen];
        std::string version = std::to_string(v.version);
        const TRITONSERVER_Parameter* labels[4] = {
            TRITONSERVER_ParameterNew("router", TRITONSERVER_PARAMETER_STRING, name_.c_str()),
            TRITONSERVER_ParameterNew("model", TRITONSERVER_PARAMETER_STRING, v.model.c_str()),
            TRITONSERVER_ParameterNew("version", TRITONSERVER_PARAMETER_STRING, version.c_str()),
            TRITONSERVER_ParameterNew(
                "outcome", TRITONSERVER_PARAMETER_STRING, failed ? "failure" : "success")};
        TRITONSERVER_Error* err = TRITONSERVER_MetricNew(&metric, family_, labels, 4);
        for (auto* label : labels) TRITONSERVER_ParameterDelete(const_cast<TRITONSERVER_Parameter*>(label));
        if (err != nullptr) {
          TRITONSERVER_ErrorDelete(err);
          return;
        }
        metrics_[slot] = metric;
      }
    }
    TRITONSERVER_Error* err = TRITONSERVER_MetricIncrement(metric, 1);
    if (err != nullptr) TRITONSERVER_ErrorDelete(err);
  }

 private:
  static TRITONSERVER_Error* Allocate(
      TRITONSERVER_ResponseAllocator*, const char*, size_t size, TRITONSERVER_MemoryType, int64_t, void*,
      void** buffer, void** buffer_userp, TRITONSERVER_MemoryType* actual_type, int64_t* actual_id) {
    *buffer = size ? std::malloc(size) : nullptr;
    *buffer_userp = nullptr;
    *actual_type = TRITONSERVER_MEMORY_CPU;
    *actual_id = 0;
    if (size && *buffer == nullptr) return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INTERNAL, "router: out of memory");
    return nullptr;
  }
  static TRITONSERVER_Error* Free(
      TRITONSERVER_ResponseAllocator*, void* buffer, void*, size_t, TRITONSERVER_MemoryType, int64_t) {
    std::free(buffer);
    return nullptr;
  }

  std::unique_ptr<Router> router_;
  std::string name_;
  TRITONSERVER_Server* server_ = nullptr;
  TRITONSERVER_ResponseAllocator* allocator_ = nullptr;
  TRITONSERVER_MetricFamily* family_ = nullptr;
  std::vector<TRITONSERVER_Metric*> metrics_;  // [variant * 2 + failed], made on first use
  std::mutex mu_;
};

// One client request on its way: released once the forwarded request is released (the target no
// longer reads the client's input buffers) and its final response is sent.
struct Forwarded {
  RouterModel* model;
  TRITONBACKEND_ModelInstance* instance;
  TRITONBACKEND_Request* request;
  size_t chosen;
  uint64_t start_ns;
  bool ok = false;
  std::atomic<int> pending{2};
};

void Finish(Forwarded* f) {
  if (f->pending.fetch_sub(1) != 1) return;
  uint64_t end = NowNs();
  TRITONBACKEND_ModelInstanceReportStatistics(f->instance, f->request, f->ok, f->start_ns, f->start_ns, end, end);
  TRITONBACKEND_Request* request = f->request;
  delete f;
  // Last: once every request is released Triton may unload the router.
  TRITONBACKEND_RequestRelease(request, TRITONSERVER_REQUEST_RELEASE_ALL);
}

void SendError(TRITONBACKEND_Request* request, TRITONSERVER_Error_Code code, const std::string& message) {
  TRITONBACKEND_Response* response = nullptr;
  if (TRITONBACKEND_ResponseNew(&response, request) != nullptr) return;
  TRITONSERVER_Error* err = TRITONSERVER_ErrorNew(code, message.c_str());
  TRITONBACKEND_ResponseSend(response, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
  TRITONSERVER_ErrorDelete(err);
}

void Released(TRITONSERVER_InferenceRequest* forwarded, const uint32_t, void* userp) {
  TRITONSERVER_InferenceRequestDelete(forwarded);
  Finish(static_cast<Forwarded*>(userp));
}

// Copies the target's response into the client's; an error as the client would get it directly.
TRITONSERVER_Error* Relay(TRITONSERVER_InferenceResponse* from, TRITONBACKEND_Response* to) {
  TRITONSERVER_Error* err = TRITONSERVER_InferenceResponseError(from);
  if (err != nullptr) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ErrorCode(err), CleanMessage(TRITONSERVER_ErrorMessage(err)).c_str());
  }
  uint32_t count = 0;
  TRITONSERVER_InferenceResponseOutputCount(from, &count);
  for (uint32_t i = 0; i < count; ++i) {
    const char* name;
    TRITONSERVER_DataType datatype;
    const int64_t* shape;
    uint64_t dims;
    const void* base;
    size_t size;
    TRITONSERVER_MemoryType memory_type;
    int64_t memory_id;
    void* userp;
    TRITONSERVER_Error* e = TRITONSERVER_InferenceResponseOutput(
        from, i, &name, &datatype, &shape, &dims, &base, &size, &memory_type, &memory_id, &userp);
    if (e != nullptr) return e;
    TRITONBACKEND_Output* output = nullptr;
    if ((e = TRITONBACKEND_ResponseOutput(to, &output, name, datatype, shape, static_cast<uint32_t>(dims)))) return e;
    void* buffer = nullptr;
    TRITONSERVER_MemoryType buffer_type = TRITONSERVER_MEMORY_CPU;
    int64_t buffer_id = 0;
    if ((e = TRITONBACKEND_OutputBuffer(output, &buffer, size, &buffer_type, &buffer_id))) return e;
    if (size) std::memcpy(buffer, base, size);
  }
  return nullptr;
}

void Responded(TRITONSERVER_InferenceResponse* response, const uint32_t flags, void* userp) {
  auto* f = static_cast<Forwarded*>(userp);
  if (response != nullptr) {
    TRITONBACKEND_Response* out = nullptr;
    TRITONSERVER_Error* err = TRITONBACKEND_ResponseNew(&out, f->request);
    if (err == nullptr) {
      err = Relay(response, out);
      f->ok = err == nullptr;
      f->model->Count(f->chosen, err != nullptr);
      TRITONBACKEND_ResponseSend(out, TRITONSERVER_RESPONSE_COMPLETE_FINAL, err);
    }
    if (err != nullptr) TRITONSERVER_ErrorDelete(err);
    TRITONSERVER_InferenceResponseDelete(response);
  }
  if (flags & TRITONSERVER_RESPONSE_COMPLETE_FINAL) Finish(f);
}

std::vector<std::pair<std::string, std::string>> Parameters(TRITONBACKEND_Request* request) {
  std::vector<std::pair<std::string, std::string>> params;
  uint32_t count = 0;
  if (TRITONBACKEND_RequestParameterCount(request, &count) != nullptr) return params;
  for (uint32_t i = 0; i < count; ++i) {
    const char* key;
    TRITONSERVER_ParameterType type;
    const void* value;
    if (TRITONBACKEND_RequestParameter(request, i, &key, &type, &value) != nullptr) continue;
    std::string text;
    if (type == TRITONSERVER_PARAMETER_STRING) {
      text = static_cast<const char*>(value);
    } else if (type == TRITONSERVER_PARAMETER_INT) {
      text = std::to_string(*static_cast<const int64_t*>(value));
    } else if (type == TRITONSERVER_PARAMETER_BOOL) {
      text = *static_cast<const bool*>(value) ? "True" : "False";
    } else {
      continue;
    }
    params.emplace_back(Lower(key), text);
  }
  return params;
}

// Builds and sends the forwarded request; on failure returns the error (nothing was sent).
TRITONSERVER_Error* Forward(Forwarded* f) {
  const Variant& variant = f->model->router().variants()[f->chosen];
  TRITONSERVER_InferenceRequest* to = nullptr;
  TRITONSERVER_Error* err =
      TRITONSERVER_InferenceRequestNew(&to, f->model->server(), variant.model.c_str(), variant.version);
  if (err != nullptr) return err;
  uint32_t count = 0;
  TRITONBACKEND_RequestInputCount(f->request, &count);
  for (uint32_t i = 0; i < count && err == nullptr; ++i) {
    TRITONBACKEND_Input* input;
    const char* name;
    TRITONSERVER_DataType datatype;
    const int64_t* shape;
    uint32_t dims, buffers;
    uint64_t bytes;
    if ((err = TRITONBACKEND_RequestInputByIndex(f->request, i, &input))) break;
    if ((err = TRITONBACKEND_InputProperties(input, &name, &datatype, &shape, &dims, &bytes, &buffers))) break;
    if ((err = TRITONSERVER_InferenceRequestAddInput(to, name, datatype, shape, dims))) break;
    for (uint32_t b = 0; b < buffers && err == nullptr; ++b) {
      const void* buffer;
      uint64_t size;
      TRITONSERVER_MemoryType memory_type = TRITONSERVER_MEMORY_CPU;
      int64_t memory_id = 0;
      if ((err = TRITONBACKEND_InputBuffer(input, b, &buffer, &size, &memory_type, &memory_id))) break;
      err = TRITONSERVER_InferenceRequestAppendInputData(to, name, buffer, size, memory_type, memory_id);
    }
  }
  TRITONBACKEND_RequestOutputCount(f->request, &count);
  for (uint32_t i = 0; i < count && err == nullptr; ++i) {
    const char* name;
    if ((err = TRITONBACKEND_RequestOutputName(f->request, i, &name))) break;
    err = TRITONSERVER_InferenceRequestAddRequestedOutput(to, name);
  }
  if (err == nullptr) err = TRITONSERVER_InferenceRequestSetReleaseCallback(to, Released, f);
  if (err == nullptr) {
    err = TRITONSERVER_InferenceRequestSetResponseCallback(to, f->model->allocator(), nullptr, Responded, f);
  }
  if (err == nullptr) err = TRITONSERVER_ServerInferAsync(f->model->server(), to, nullptr);
  if (err != nullptr) TRITONSERVER_InferenceRequestDelete(to);
  return err;
}

}  // namespace

extern "C" {

TRITONSERVER_Error* TRITONBACKEND_ModelInitialize(TRITONBACKEND_Model* model) {
  TRITONSERVER_Message* message = nullptr;
  TRITONSERVER_Error* err = TRITONBACKEND_ModelConfig(model, 1, &message);
  if (err != nullptr) return err;
  const char* base;
  size_t size;
  TRITONSERVER_MessageSerializeToJson(message, &base, &size);
  std::string text(base, size);
  TRITONSERVER_MessageDelete(message);
  const char* name = "";
  TRITONBACKEND_ModelName(model, &name);
  try {
    Json config = JsonReader(text).Read();
    auto router = std::make_unique<Router>(
        ParseVariants(ConfigString(config, "variants")), ConfigString(config, "sticky_key"),
        ConfigString(config, "pin_key"));
    auto* state = new RouterModel(model, std::move(router), name);
    return TRITONBACKEND_ModelSetState(model, state);
  }
  catch (const std::exception& e) {
    return TRITONSERVER_ErrorNew(TRITONSERVER_ERROR_INVALID_ARG, e.what());
  }
}

TRITONSERVER_Error* TRITONBACKEND_ModelFinalize(TRITONBACKEND_Model* model) {
  void* state = nullptr;
  TRITONBACKEND_ModelState(model, &state);
  delete static_cast<RouterModel*>(state);
  return nullptr;
}

TRITONSERVER_Error* TRITONBACKEND_ModelInstanceExecute(
    TRITONBACKEND_ModelInstance* instance, TRITONBACKEND_Request** requests, const uint32_t count) {
  uint64_t start = NowNs();
  TRITONBACKEND_Model* model;
  TRITONBACKEND_ModelInstanceModel(instance, &model);
  void* state = nullptr;
  TRITONBACKEND_ModelState(model, &state);
  auto* router = static_cast<RouterModel*>(state);
  for (uint32_t r = 0; r < count; ++r) {
    size_t chosen;
    try {
      chosen = router->router().Choose(Parameters(requests[r]));
    }
    catch (const std::exception& e) {
      SendError(requests[r], TRITONSERVER_ERROR_INTERNAL, std::string("router: ") + e.what());
      TRITONBACKEND_RequestRelease(requests[r], TRITONSERVER_REQUEST_RELEASE_ALL);
      continue;
    }
    auto* f = new Forwarded{router, instance, requests[r], chosen, start};
    TRITONSERVER_Error* err = Forward(f);
    if (err != nullptr) {  // nothing was sent: answer, count and release here
      const Variant& v = router->router().variants()[chosen];
      SendError(f->request, TRITONSERVER_ErrorCode(err),
                CleanMessage("router: " + v.label + ": " + TRITONSERVER_ErrorMessage(err)));
      TRITONSERVER_ErrorDelete(err);
      router->Count(chosen, true);
      f->pending = 1;
      Finish(f);
    }
  }
  uint64_t end = NowNs();
  TRITONBACKEND_ModelInstanceReportBatchStatistics(instance, count, start, start, end, end);
  return nullptr;  // every request is ours now: released by Finish
}

}  // extern "C"
