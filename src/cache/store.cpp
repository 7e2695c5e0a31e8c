#include "cache/store.h"

#include "core/hash.h"

#include <algorithm>
#include <cstring>
#include <limits>
#include <random>

namespace sluice::cache {
namespace {

constexpr int64_t kNsPerSecond = 1'000'000'000;
constexpr size_t kMaxObjectCap = size_t{64} << 20;

// What kSlotOverhead stands for, with 16 bytes of allocator header per allocation.
constexpr size_t kListNode = 2 * sizeof(void*) + sizeof(void*) + sizeof(std::shared_ptr<int>) +
                             sizeof(size_t) + sizeof(uint64_t) + 16;
constexpr size_t kMapNode = sizeof(void*) + sizeof(std::string) +
                            sizeof(std::vector<std::list<int>::iterator>) + sizeof(size_t) + 16;
constexpr size_t kVariantSlot = sizeof(std::list<int>::iterator);
constexpr size_t kControlBlock = 2 * sizeof(int) + sizeof(void*) + 16;
static_assert(Store::kSlotOverhead >= kListNode + kMapNode + kVariantSlot + kControlBlock);

int64_t add_saturated(int64_t a, int64_t b) {
  int64_t r;
  if (__builtin_add_overflow(a, b, &r)) {
    return b > 0 ? std::numeric_limits<int64_t>::max() : std::numeric_limits<int64_t>::min();
  }
  return r;
}

char lower(char c) { return c >= 'A' && c <= 'Z' ? static_cast<char>(c + ('a' - 'A')) : c; }

// Host without port, lower-cased: "Example.COM:8080" -> "example.com", "[::1]:80" -> "[::1]".
// A bare IPv6 address (more than one ':', no brackets) is kept whole.
std::string normalise_host(std::string_view host) {
  if (!host.empty() && host.front() == '[') {
    const size_t close = host.find(']');
    if (close != std::string_view::npos) host = host.substr(0, close + 1);
  } else if (const size_t colon = host.find(':');
             colon != std::string_view::npos &&
             host.find(':', colon + 1) == std::string_view::npos) {
    host = host.substr(0, colon);
  }
  std::string out(host);
  for (char& c : out) c = lower(c);
  return out;
}

void append_field(std::string& key, std::string_view field) {
  key += std::to_string(field.size());
  key += ':';
  key += field;
}

// Reads one length-prefixed field of a key at `pos`; false if the key is malformed.
bool read_field(std::string_view key, size_t& pos, std::string_view& field) {
  size_t length = 0;
  size_t digits = 0;
  while (pos < key.size() && key[pos] >= '0' && key[pos] <= '9' && digits < 19) {
    length = length * 10 + static_cast<size_t>(key[pos] - '0');
    ++pos;
    ++digits;
  }
  if (digits == 0 || pos >= key.size() || key[pos] != ':') return false;
  ++pos;
  if (length > key.size() - pos) return false;
  field = key.substr(pos, length);
  pos += length;
  return true;
}

bool path_has_prefix(std::string_view path, std::string_view prefix) {
  if (prefix.empty() || prefix == "/") return true;
  if (path.substr(0, prefix.size()) != prefix) return false;
  return path.size() == prefix.size() || prefix.back() == '/' || path[prefix.size()] == '/';
}

bool variant_matches(const HeaderPairs& vary_values, const RequestHeader& header) {
  for (const auto& [name, stored] : vary_values) {
    const std::optional<std::string_view> value = header(name);
    if (value.value_or(std::string_view()) != stored) return false;
  }
  return true;
}

}  // namespace

// --- Entry ----------------------------------------------------------------------------------

size_t Entry::size() const {
  size_t n = sizeof(Entry) + body.size() + reason.size();
  for (const auto& [name, value] : headers) n += kPairOverhead + name.size() + value.size();
  for (const auto& [name, value] : vary_values) n += kPairOverhead + name.size() + value.size();
  return n;
}

int64_t Entry::age_s(int64_t now_ns) const {
  int64_t resident_ns;
  if (__builtin_sub_overflow(now_ns, stored_at_ns, &resident_ns)) {
    resident_ns = now_ns > stored_at_ns ? std::numeric_limits<int64_t>::max() : 0;
  }
  return add_saturated(std::max<int64_t>(initial_age_s, 0),
                       std::max<int64_t>(resident_ns, 0) / kNsPerSecond);
}

bool Entry::fresh(int64_t now_ns) const { return age_s(now_ns) < ttl_s; }

bool Entry::usable_if_error(int64_t now_ns) const {
  return age_s(now_ns) < add_saturated(ttl_s, std::max<int64_t>(stale_if_error_s, 0));
}

bool Entry::satisfies(const LookupRules& rules, int64_t now_ns) const {
  const int64_t age = age_s(now_ns);
  if (age >= ttl_s) return false;
  if (rules.max_age && age > *rules.max_age) return false;
  if (rules.min_fresh && ttl_s - age < *rules.min_fresh) return false;  // 0 <= age < ttl_s
  return true;
}

HeaderPairs select_vary_values(const std::vector<std::string>& vary_names,
                               const RequestHeader& header) {
  HeaderPairs values;
  values.reserve(vary_names.size());
  for (const std::string& name : vary_names) {
    values.emplace_back(name, header(name).value_or(std::string_view()));
  }
  return values;
}

// --- SeededHash -------------------------------------------------------------------------------

SeededHash::SeededHash() : seed(random_seed()) {}

size_t SeededHash::operator()(const std::string& key) const {
  return static_cast<size_t>(seeded_hash(seed, key));
}

// --- Store ------------------------------------------------------------------------------------

Store::Store(size_t max_bytes) : max_bytes_(max_bytes) {}

Store::~Store() = default;

size_t Store::max_object() const { return std::min(max_bytes_ / 8, kMaxObjectCap); }

std::string Store::make_key(std::string_view host, std::string_view path, std::string_view query,
                            std::string_view consumer) {
  std::string key;
  key.reserve(host.size() + path.size() + query.size() + consumer.size() + 16);
  append_field(key, normalise_host(host));
  append_field(key, path);
  append_field(key, query);
  append_field(key, consumer);
  return key;
}

size_t Store::charge(const std::string& key, const Entry& entry) {
  return entry.size() + key.size() + kSlotOverhead;
}

void Store::unlink(Lru::iterator slot, Dropped& dropped) {
  auto found = index_.find(*slot->key);
  if (found != index_.end()) {
    std::vector<Lru::iterator>& variants = found->second;
    variants.erase(std::find(variants.begin(), variants.end(), slot));
    if (variants.empty()) index_.erase(found);
  }
  bytes_ -= slot->charge;
  dropped.push_back(std::move(slot->entry));
  lru_.erase(slot);
}

std::shared_ptr<const Entry> Store::lookup(const std::string& key, const RequestHeader& header) {
  std::lock_guard lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) return nullptr;
  std::optional<Lru::iterator> best;
  for (Lru::iterator slot : found->second) {
    if (!variant_matches(slot->entry->vary_values, header)) continue;
    if (!best || slot->entry->stored_at_ns > (*best)->entry->stored_at_ns) best = slot;
  }
  if (!best) return nullptr;
  lru_.splice(lru_.begin(), lru_, *best);  // iterators stay valid
  (*best)->last_used = ++tick_;
  return (*best)->entry;
}

bool Store::insert(const std::string& key, std::shared_ptr<const Entry> entry) {
  if (entry == nullptr) return false;
  const size_t cost = charge(key, *entry);
  Dropped dropped;  // destroyed after `lock`
  std::lock_guard lock(mu_);

  if (auto found = index_.find(key); found != index_.end()) {
    const std::vector<Lru::iterator>& variants = found->second;
    auto same = std::find_if(variants.begin(), variants.end(), [&](Lru::iterator slot) {
      return slot->entry->vary_values == entry->vary_values;
    });
    if (same != variants.end()) unlink(*same, dropped);  // may erase `found`
  }
  if (cost > max_object()) return false;

  auto [found, inserted] = index_.try_emplace(key);
  std::vector<Lru::iterator>& variants = found->second;
  if (variants.size() >= kMaxVariants) {  // cannot empty `variants`: kMaxVariants > 1
    unlink(*std::min_element(
               variants.begin(), variants.end(),
               [](Lru::iterator a, Lru::iterator b) { return a->last_used < b->last_used; }),
           dropped);
  }
  lru_.push_front(Slot{&found->first, std::move(entry), cost, ++tick_});
  variants.push_back(lru_.begin());
  bytes_ += cost;
  // The new entry is at the front and costs at most max_bytes / 8, so it is never evicted here.
  while (bytes_ > max_bytes_) {
    unlink(std::prev(lru_.end()), dropped);
    ++evictions_;
  }
  return true;
}

void Store::erase(const std::string& key) {
  Dropped dropped;
  std::lock_guard lock(mu_);
  auto found = index_.find(key);
  if (found == index_.end()) return;
  for (Lru::iterator slot : found->second) {
    bytes_ -= slot->charge;
    dropped.push_back(std::move(slot->entry));
    lru_.erase(slot);
  }
  index_.erase(found);
}

size_t Store::purge_prefix(std::string_view host, std::string_view path_prefix) {
  const std::string wanted_host = normalise_host(host);
  size_t removed = 0;
  Dropped dropped;
  std::lock_guard lock(mu_);
  for (auto it = index_.begin(); it != index_.end();) {
    size_t pos = 0;
    std::string_view key_host, key_path;
    const bool parsed =
        read_field(it->first, pos, key_host) && read_field(it->first, pos, key_path);
    if (!parsed || (!wanted_host.empty() && key_host != wanted_host) ||
        !path_has_prefix(key_path, path_prefix)) {
      ++it;
      continue;
    }
    for (Lru::iterator slot : it->second) {
      bytes_ -= slot->charge;
      dropped.push_back(std::move(slot->entry));
      lru_.erase(slot);
      ++removed;
    }
    it = index_.erase(it);
  }
  return removed;
}

size_t Store::bytes() const {
  std::lock_guard lock(mu_);
  return bytes_;
}

size_t Store::entries() const {
  std::lock_guard lock(mu_);
  return lru_.size();
}

uint64_t Store::evictions() const {
  std::lock_guard lock(mu_);
  return evictions_;
}

// --- Inflight ---------------------------------------------------------------------------------

Inflight::Inflight() = default;

Inflight::~Inflight() = default;

bool Inflight::join(const std::string& key, std::function<void()> wake) {
  std::lock_guard lock(mu_);
  auto [round, leader] = waiters_.try_emplace(key);
  if (!leader) round->second.push_back(std::move(wake));
  return leader;
}

void Inflight::complete(const std::string& key) {
  std::vector<std::function<void()>> wake;
  {
    std::lock_guard lock(mu_);
    auto round = waiters_.find(key);
    if (round == waiters_.end()) return;
    wake = std::move(round->second);
    waiters_.erase(round);
  }
  for (auto& w : wake) {
    if (w) w();
  }
}

size_t Inflight::waiting(const std::string& key) const {
  std::lock_guard lock(mu_);
  auto round = waiters_.find(key);
  return round == waiters_.end() ? 0 : round->second.size();
}

size_t Inflight::keys() const {
  std::lock_guard lock(mu_);
  return waiters_.size();
}

}  // namespace sluice::cache
