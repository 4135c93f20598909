// The cores' issue rate: 12 independent FMA chains per thread, no memory traffic (the most any matmul
// can reach), for 512-bit and 256-bit fp32 FMAs and 512-bit bf16 dot products (vdpbf16ps, 2 FLOP per
// bf16 pair), each only where the CPU has it (null otherwise: an AVX2-only Zen 3 would stop at the
// first 512-bit instruction); and the clock, from a chain of dependent 1-cycle adds. JSON lines; bench/matmul_peak.py
// compiles and runs it:  gcc -O2 -fopenmp -o fma_peak bench/fma_peak.c && ./fma_peak
#include <immintrin.h>
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <omp.h>
static double now(void){struct timespec t;clock_gettime(CLOCK_MONOTONIC,&t);return t.tv_sec+t.tv_nsec*1e-9;}
#define N 12
__attribute__((target("avx512f"))) static float fma512(long iters){
  __m512 a[N]; __m512 x=_mm512_set1_ps(1.0000001f), y=_mm512_set1_ps(0.9999999f);
  for(int i=0;i<N;i++) a[i]=_mm512_set1_ps((float)i);
  for(long it=0;it<iters;it++){
#pragma GCC unroll 12
    for(int i=0;i<N;i++) a[i]=_mm512_fmadd_ps(a[i],x,y);
  }
  __m512 s=a[0]; for(int i=1;i<N;i++) s=_mm512_add_ps(s,a[i]); return _mm512_reduce_add_ps(s);
}
__attribute__((target("avx2,fma"))) static float fma256(long iters){
  __m256 a[N]; __m256 x=_mm256_set1_ps(1.0000001f), y=_mm256_set1_ps(0.9999999f);
  for(int i=0;i<N;i++) a[i]=_mm256_set1_ps((float)i);
  for(long it=0;it<iters;it++){
#pragma GCC unroll 12
    for(int i=0;i<N;i++) a[i]=_mm256_fmadd_ps(a[i],x,y);
  }
  __m256 s=a[0]; for(int i=1;i<N;i++) s=_mm256_add_ps(s,a[i]); float o[8]; _mm256_storeu_ps(o,s); return o[0];
}
__attribute__((target("avx512f,avx512bf16"))) static float dpbf16(long iters){
  __m512 a[N]; __m512bh x=(__m512bh)_mm512_set1_epi16(0x3f80), y=(__m512bh)_mm512_set1_epi16(0x3f80);
  for(int i=0;i<N;i++) a[i]=_mm512_setzero_ps();
  for(long it=0;it<iters;it++){
#pragma GCC unroll 12
    for(int i=0;i<N;i++) a[i]=_mm512_dpbf16_ps(a[i],x,y);
  }
  __m512 s=a[0]; for(int i=1;i<N;i++) s=_mm512_add_ps(s,a[i]); return _mm512_reduce_add_ps(s);
}
// 8 dependent 1-cycle adds per iteration: the loop's own counter and branch run alongside
static long chain(long iters){ long v=0; for(long i=0;i<iters;i++){
  __asm__ volatile("add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\t"
                   "add $1, %0\n\tadd $1, %0\n\tadd $1, %0\n\tadd $1, %0":"+r"(v)); } return v; }
int main(void){
  long it=200000000; double t;
  t=now(); chain(it); double ghz=it*8.0/(now()-t)/1e9;
  printf("{\"clock_ghz_single_core\": %.3f}\n", ghz);
  int threads[2]={1,2};
  const int has512=__builtin_cpu_supports("avx512f"), has256=__builtin_cpu_supports("avx2")&&__builtin_cpu_supports("fma");
  const int hasbf=has512&&__builtin_cpu_supports("avx512bf16");
  for(int k=0;k<2;k++){ int nt=threads[k]; long iters=20000000; volatile float sink;
    double best512=0,best256=0,bestbf=0;
    for(int rep=0;rep<3;rep++){
      double f;
      if(has512){ t=now();
        #pragma omp parallel num_threads(nt)
        { sink=fma512(iters); }
        f=(double)nt*iters*N*16*2/(now()-t); if(f>best512)best512=f; }
      if(has256){ t=now();
        #pragma omp parallel num_threads(nt)
        { sink=fma256(iters); }
        f=(double)nt*iters*N*8*2/(now()-t); if(f>best256)best256=f; }
      if(hasbf){ t=now();
        #pragma omp parallel num_threads(nt)
        { sink=dpbf16(iters); }
        f=(double)nt*iters*N*32*2/(now()-t); if(f>bestbf)bestbf=f; }
    }
    char a[32]="null", b[32]="null", c[32]="null";
    if(has512) snprintf(a,sizeof a,"%.1f",best512/1e9);
    if(has256) snprintf(b,sizeof b,"%.1f",best256/1e9);
    if(hasbf) snprintf(c,sizeof c,"%.1f",bestbf/1e9);
    printf("{\"threads\": %d, \"fp32_fma512_gflops\": %s, \"fp32_fma256_gflops\": %s, \"bf16_dpbf16_512_gflops\": %s}\n", nt, a, b, c);
  }
}
