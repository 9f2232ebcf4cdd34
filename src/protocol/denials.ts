/**
 * Why a request for a task token was refused, as a fixed set of codes (metrics label them; the
 * public `error_description` stays the human sentence). Never free text: a label's values must
 * be bounded.
 * - `policy_no_rule`: no rule names the workload;
 * - `policy_audience`, `policy_actions`, `policy_resources`, `policy_binding`: the closest rule
 *   does not cover that part of the intent (the first part refused, in this order);
 * - `cap`: the workload holds its maximum of active grants;
 * - `rate`: the workload's issuance rate is spent;
 * - `attestation`: the evidence did not attest a workload.
 */
export const DENIAL_REASONS = ['policy_no_rule', 'policy_audience', 'policy_actions', 'policy_resources', 'policy_binding', 'cap', 'rate', 'attestation'] as const;
export type DenialReason = (typeof DENIAL_REASONS)[number];
