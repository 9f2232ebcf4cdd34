import { describe, expect, it } from 'vitest';
import { parseConfig } from '../../src/config/load.js';
import { configProblems } from '../helpers/config.js';

const base = {
  issuer: 'https://broker.example.com',
  policies: [{ name: 'r', workloads: ['spiffe://td/*'], audiences: ['a'], actions: ['read'] }],
  tokens: { key_publication_secret: 'a-publication-secret-of-32-chars-or-more' },
};
const store = { kind: 'redis', url: 'redis://127.0.0.1:6379' };

describe('store.replication', () => {
  it('is off unless set; when set, min_replicas and a timeout (default 250ms) in ms', () => {
    expect(parseConfig({ ...base, store }).store).not.toHaveProperty('replication');
    expect(parseConfig({ ...base, store: { ...store, replication: { min_replicas: 1 } } }).store).toMatchObject({ replication: { min_replicas: 1, timeout: 250 } });
    expect(parseConfig({ ...base, store: { ...store, replication: { min_replicas: 2, timeout: '100ms' } } }).store).toMatchObject({ replication: { min_replicas: 2, timeout: 100 } });
  });

  it('refuses no replicas, a bare number, unknown fields and a WAIT as long as a command may take', () => {
    expect(configProblems({ ...base, store: { ...store, replication: { min_replicas: 0 } } })).toEqual(['store.replication.min_replicas: Too small: expected number to be >=1']);
    expect(configProblems({ ...base, store: { ...store, replication: { min_replicas: 1, timeout: 250 } } })).toEqual([
      'store.replication.timeout: a duration needs a unit: "250s" (a bare number is not a duration)',
    ]);
    expect(configProblems({ ...base, store: { ...store, replication: { min_replicas: 1, replicas: 2 } } })).toEqual(['store.replication.replicas: unrecognized key (did you mean "min_replicas"?)']);
    expect(configProblems({ ...base, store: { ...store, command_timeout: '1s', replication: { min_replicas: 1, timeout: '1s' } } })).toEqual([
      "store.replication.timeout: must be shorter than store.command_timeout (1s): WAIT blocks within a command's time",
    ]);
  });
});
