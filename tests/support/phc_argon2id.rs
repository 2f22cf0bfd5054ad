// The Argon2id cases of the Argon2 reference implementation's test suite, shared by the tests of
// the recovery kit (`latchkey-core`) and of the encrypted key file (`latchkey-client`), each
// through its own key derivation. Included with `include!` by both.

/// One Argon2id case of the reference implementation's test suite.
struct PhcCase {
    t_cost: u32,
    /// The memory as `hashtest` takes it: log2 of the KiB.
    m_log2: u32,
    p_cost: u8,
    password: &'static str,
    salt: &'static str,
    tag: &'static str,
}

/// The Argon2id cases of the reference implementation's test suite (P-H-C/phc-winner-argon2,
/// `src/test.c`: version 0x13, 32-byte tag, no secret, no associated data), transcribed from
/// that file. Its m = 2^18 case is left out: 256 MiB is more than a test should take.
const PHC_ARGON2ID_CASES: [PhcCase; 7] = [
    PhcCase {
        t_cost: 2,
        m_log2: 16,
        p_cost: 1,
        password: "password",
        salt: "somesalt",
        tag: "09316115d5cf24ed5a15a31a3ba326e5cf32edc24702987c02b6566f61913cf7",
    },
    PhcCase {
        t_cost: 2,
        m_log2: 8,
        p_cost: 1,
        password: "password",
        salt: "somesalt",
        tag: "9dfeb910e80bad0311fee20f9c0e2b12c17987b4cac90c2ef54d5b3021c68bfe",
    },
    PhcCase {
        t_cost: 2,
        m_log2: 8,
        p_cost: 2,
        password: "password",
        salt: "somesalt",
        tag: "6d093c501fd5999645e0ea3bf620d7b8be7fd2db59c20d9fff9539da2bf57037",
    },
    PhcCase {
        t_cost: 1,
        m_log2: 16,
        p_cost: 1,
        password: "password",
        salt: "somesalt",
        tag: "f6a5adc1ba723dddef9b5ac1d464e180fcd9dffc9d1cbf76cca2fed795d9ca98",
    },
    PhcCase {
        t_cost: 4,
        m_log2: 16,
        p_cost: 1,
        password: "password",
        salt: "somesalt",
        tag: "9025d48e68ef7395cca9079da4c4ec3affb3c8911fe4f86d1a2520856f63172c",
    },
    PhcCase {
        t_cost: 2,
        m_log2: 16,
        p_cost: 1,
        password: "differentpassword",
        salt: "somesalt",
        tag: "0b84d652cf6b0c4beaef0dfe278ba6a80df6696281d7e0d2891b817d8c458fde",
    },
    PhcCase {
        t_cost: 2,
        m_log2: 16,
        p_cost: 1,
        password: "password",
        salt: "diffsalt",
        tag: "bdf32b05ccc42eb15d58fd19b1f856b113da1e9a5874fdcc544308565aa8141c",
    },
];
