/*
 * bcryptprimitives.dll for Wine 8 (Debian 12), which predates it.
 *
 * Rust's standard library on Windows draws its randomness (HashMap seeds, and through getrandom
 * every key Latchkey generates) from ProcessPrng in bcryptprimitives.dll, as Windows 10 and later
 * provide it. Wine added that DLL in version 9; under Wine 8 a Rust test executable does not even
 * start. This stand-in forwards to BCryptGenRandom with the system-preferred generator, which is
 * what the real ProcessPrng is documented to be equivalent to, and always succeeds on Windows.
 *
 * Used only by scripts/lib/other_systems.sh, next to the test executables it runs under Wine; it
 * is never part of a Latchkey build.
 */
#include <windows.h>
#include <bcrypt.h>

BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    while (len > 0) {
        ULONG chunk = len > 0x7fffffff ? 0x7fffffff : (ULONG)len;
        if (!BCRYPT_SUCCESS(BCryptGenRandom(NULL, data, chunk, BCRYPT_USE_SYSTEM_PREFERRED_RNG))) {
            return FALSE;
        }
        data += chunk;
        len -= chunk;
    }
    return TRUE;
}
