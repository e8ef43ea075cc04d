import { FinalFrameCache } from "./final-frame-cache";

const frame = (bytes: number, fill = 1) => Buffer.alloc(bytes, fill);

describe("FinalFrameCache", () => {
  it("encodes a frame once and answers later requests with the same Buffer", async () => {
    const cache = new FinalFrameCache(1000);
    let encodes = 0;
    const encode = async () => {
      encodes += 1;
      return frame(100);
    };
    const first = await cache.get("a", encode);
    const second = await cache.get("a", encode);
    expect(second).toBe(first);
    expect(encodes).toBe(1);
    expect(cache.size()).toBe(100);
  });

  it("shares one encoding among concurrent requests", async () => {
    const cache = new FinalFrameCache(1000);
    let encodes = 0;
    let release: (b: Buffer) => void = () => undefined;
    const encode = () => {
      encodes += 1;
      return new Promise<Buffer>((resolve) => (release = resolve));
    };
    const waiting = Array.from({ length: 10 }, () => cache.get("a", encode));
    release(frame(10));
    const frames = await Promise.all(waiting);
    expect(encodes).toBe(1);
    expect(new Set(frames).size).toBe(1);
  });

  it("keeps at most maxBytes, dropping the least recently used first", async () => {
    const cache = new FinalFrameCache(300);
    await cache.get("a", async () => frame(100, 1));
    await cache.get("b", async () => frame(100, 2));
    await cache.get("c", async () => frame(100, 3));
    await cache.get("a", async () => frame(100, 9)); // a hit: "a" becomes the most recent
    await cache.get("d", async () => frame(100, 4)); // "b" goes
    expect(cache.size()).toBe(300);
    expect((await cache.get("a", async () => frame(100, 9)))[0]).toBe(1);
    expect((await cache.get("b", async () => frame(100, 7)))[0]).toBe(7); // encoded anew
    expect(cache.size()).toBeLessThanOrEqual(300);
  });

  it("does not keep a frame larger than the whole cache, nor a failed encoding", async () => {
    const cache = new FinalFrameCache(50);
    await cache.get("big", async () => frame(51));
    expect(cache.size()).toBe(0);
    await expect(cache.get("bad", async () => Promise.reject(new Error("no image")))).rejects.toThrow("no image");
    expect((await cache.get("bad", async () => frame(5, 3)))[0]).toBe(3);
    expect(cache.size()).toBe(5);
  });

  it("keeps nothing with a size of 0", async () => {
    const cache = new FinalFrameCache(0);
    let encodes = 0;
    for (let i = 0; i < 3; i++) await cache.get("a", async () => frame(1 + encodes++));
    expect(encodes).toBe(3);
    expect(cache.size()).toBe(0);
  });
});
