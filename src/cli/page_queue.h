// The hand-over between the CPU side of a batch (threads that open, render and preprocess
// documents) and the engines (one per device) that pull pages as KV-cache slots free up.
#pragma once

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <mutex>
#include <utility>

#include "ocr/engine.h"

namespace ocr::cli {

class PageQueue : public PageSource {
 public:
  // `cancel`: while it is set, waiting calls return at once (checked every 100 ms).
  PageQueue(size_t capacity, const std::atomic<bool>* cancel) : capacity_(capacity), cancel_(cancel) {}

  // Producers: blocks while the queue is full; false when the queue was closed (stop).
  bool push(PageInput page, uint64_t tag) {
    std::unique_lock<std::mutex> lock(mu_);
    while (!closed_ && items_.size() >= capacity_ && !cancelled()) not_full_.wait_for(lock, std::chrono::milliseconds(100));
    if (cancelled()) return false;
    if (closed_) return false;
    items_.emplace_back(std::move(page), tag);
    not_empty_.notify_one();
    return true;
  }
  // Retries go first and never block (their slot was just freed).
  void push_front(PageInput page, uint64_t tag) {
    std::lock_guard<std::mutex> lock(mu_);
    items_.emplace_front(std::move(page), tag);
    not_empty_.notify_one();
  }
  // Every producer has finished: once the queue is empty and no page is in flight, next() ends.
  void producers_done() {
    std::lock_guard<std::mutex> lock(mu_);
    producers_done_ = true;
    not_empty_.notify_all();
  }
  // A page handed out by next() has been fully handled (after any retry was pushed).
  void page_finished() {
    std::lock_guard<std::mutex> lock(mu_);
    --in_flight_;
    not_empty_.notify_all();
  }
  // Stop: producers and waiting engines return at once.
  void close() {
    std::lock_guard<std::mutex> lock(mu_);
    closed_ = true;
    not_full_.notify_all();
    not_empty_.notify_all();
  }

  bool next(PageInput& page, uint64_t& tag, bool wait) override {
    std::unique_lock<std::mutex> lock(mu_);
    if (wait)
      while (!closed_ && items_.empty() && !(producers_done_ && in_flight_ == 0) && !cancelled())
        not_empty_.wait_for(lock, std::chrono::milliseconds(100));
    if (closed_ || items_.empty() || cancelled()) return false;
    page = std::move(items_.front().first);
    tag = items_.front().second;
    items_.pop_front();
    ++in_flight_;
    not_full_.notify_one();
    return true;
  }

 private:
  std::mutex mu_;
  std::condition_variable not_full_, not_empty_;
  std::deque<std::pair<PageInput, uint64_t>> items_;
  bool cancelled() const { return cancel_ && cancel_->load(); }
  size_t capacity_;
  const std::atomic<bool>* cancel_;
  int64_t in_flight_ = 0;
  bool producers_done_ = false;
  bool closed_ = false;
};

}  // namespace ocr::cli
